"""A job's processor run in worker processes: ``[processor] workers = N | "auto"``.

`pool` is the daemon's side (`WorkerPool`: N children, a batch cut into N consecutive
slices, the answers put back in order); `child` is what each child runs
(``python -m supervisor.workers.child``); `frames` is how they talk (pickles, each after
its length, over the child's stdin and stdout).
"""
