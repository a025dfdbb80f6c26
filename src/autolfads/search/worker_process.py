"""A search worker process: python -m autolfads.search.worker_process FD PARENT_PID, started by
workers.ProcessWorkers (FD: its end of the socket pair to the driver). Not imported by the package, so
running it as __main__ imports nothing twice."""

import sys
from multiprocessing.connection import Connection

from .workers import run_worker

if __name__ == "__main__":
    run_worker(Connection(int(sys.argv[1])), int(sys.argv[2]))
