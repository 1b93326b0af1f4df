"""censusdrop.audit: the tamper-evident audit trail.

Modules, in the order data flows through them:

- ``events``: ``AuditEvent`` and the ``AuditSink`` protocol (no SQLAlchemy,
  so anything can build and emit events);
- ``store``: ``AuditWriter``, the sink the server uses (a writer thread with
  group commit, failing closed); ``append``: ``AuditLog`` for direct,
  serialised appends; ``locking``: the cross-process chain lock;
- ``chain``: the canonical encoding and the hash chain; ``schema``: tables;
- ``checkpoint``: the Ed25519 signing key and signed checkpoints;
- ``verify`` and ``diagnose``: recomputing the chain and naming the first
  bad entry; ``export``: offline exports and their verification;
- ``query``: filtered events, the download ledger, session summaries;
  ``report``: the auditors' HTML report (``report_data`` reads, ``report_stats``
  counts, ``report_rules`` finds, ``report_html``/``report_access``/
  ``report_svg``/``report_page``/``report_text`` write the page).

Exceptions::

    AuditError                    (events) base of everything raised here
    ├── AuditUnavailable          (events) an event could not be recorded:
    │                             the access it describes must not happen
    ├── KeyFileError              (checkpoint) key file missing or unsafe
    ├── CheckpointFileError       (checkpoint) checkpoint file unreadable
    ├── ExportError               (export) export not writable or readable
    └── ReportError               (report) report not writable

Malformed events (details that are not JSON, a negative size) raise
``TypeError``/``ValueError`` in the caller, when emitted.

This package module imports nothing, so importing ``censusdrop.audit.events``
does not pull in SQLAlchemy.
"""
