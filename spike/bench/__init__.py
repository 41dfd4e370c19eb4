"""How fast is the pipe? A benchmark against the machine's floor and the alternatives.

Run ``python -m spike.bench`` (add ``--quick`` for a short run and
``--json FILE`` to save the results). Every server runs in its own process;
the client loops run here. Measurements are taken in interleaved rounds (each
round visits every case once, in a rotated order) and the figures reported
are medians over the rounds, so a slow moment of the machine hits all cases
alike instead of one. On Linux the benchmark and its servers are pinned to
one CPU: on a 2-core VM a round trip that crosses cores costs tens of
microseconds more, and whether it crosses changes from run to run.

What it measures:

* round trips on one connection (p50, p99, requests/s): the spike with plain
  text and with JSON, a C blocking echo server (the machine's floor), a plain
  Python socket echo server (the Python floor), a one-thread ``selectors``
  echo (what an event loop costs by itself), a naive JSON-lines server,
  ZeroMQ REQ/REP (when pyzmq is installed) and HTTP/1.1 keep-alive
  (``http.server`` + ``http.client``);
* pipelined messages/s on one connection (a writer thread and a reader),
  against the floors and naive Python lines and JSON-lines servers that
  send the replies to each ``recv`` together (and, as extra rows, the same
  servers with a ``sendall`` per line);
* 1,000 connections x 20 round trips at once (requests/s, p99, errors)
  against the spike and a C epoll server;
* one 8 MiB message echoed (MiB/s), the spike with a raised line limit;
* ops that wait: 32 connections x 15 calls of a ``def`` op that sleeps
  20 ms, and 1,000 clients that each connect and make one call of an
  ``async def`` op that waits 100 ms (timed from the first connect, so a
  thread's start counts; as extra rows, the same calls on connections
  opened beforehand), against a ``socketserver.ThreadingTCPServer`` running
  the same op with a thread per connection; beside them the Python floor
  for that job (one ``selectors`` thread, a heap of replies due) and, in a
  pinned run, the arriving pair again with every CPU allowed.

The spike runs as users run it: ``spike-server`` with its default log, a
line per connection and per message, written to a pipe that this process
reads. A second spike server started with ``--quiet`` runs beside it in the
round-trip, pipelined and many-connection tests, so the cost of the log is
measured too.

The modules, in the order a run uses them: ``plan`` (sizes, servers, cases),
``procs`` (server processes, the C build), ``servers`` (the reference
servers, ``python -m spike.bench.servers KIND``), ``load`` (the client
loops), ``runner`` (rounds, medians, ratios, targets, JSON), ``report`` (the
columns of every table, the machine), ``__main__`` (the command line).

This file imports nothing: each reference server process imports only
``spike.bench.servers``, and ``python -m spike.bench`` runs ``__main__``
without a second copy of it.
"""
