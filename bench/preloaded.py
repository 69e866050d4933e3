"""Imported by the fork server of :class:`bench.run.JobRunner`: heavy libraries loaded once.

Every measured job then runs in a fresh process forked from that server, so it starts with
exactly the libraries a job would import anyway and pays no interpreter start-up.
"""

from bench.worker import preload

preload()
