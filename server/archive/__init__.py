"""The end of an acceptance round: its own key, its archive, its purge.

- ``keys``: each round has a round key (``round-<id>``); a prefecture's
  files are encrypted under the key of the newest round it belongs to, and
  files written before it joined are re-encrypted under that key;
- ``manifest``: the signed list of what an archive holds;
- ``writer``: ``round archive`` writes a self-verifying archive directory;
- ``verify``: ``round verify-archive`` checks one offline;
- ``records``: the archives written, in the database.

Destruction itself lives in ``censusdrop.server.purge``.
"""
