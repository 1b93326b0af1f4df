"""The side-by-side FTPS benchmark behind ``bench/run.py``.

Modules, in the order a run uses them:

- ``debian``: the peer servers and curl from Debian packages, unpacked
  into a cache when the system does not have them;
- ``accounts``: the run's certificate, and local users whose yescrypt
  hashes cost about as much as censusdrop's Argon2id check;
- ``process``: child processes in their own process group, their CPU time
  and memory, and their stopping;
- ``servers``: the five servers (and censusdrop on PostgreSQL), each on
  127.0.0.1 with TLS required on control and data connections;
- ``clients``: curl and a session-reusing ftplib client, with timeouts;
- ``report``: medians, ratios and the printed table.
"""
