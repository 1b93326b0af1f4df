"""Pre-review of uploads: the validator wired to storage, database and server.

Modules, in reading order: ``source`` (an area of the storage layer as the
validator's tree source; the completion marker), ``records`` (stored
reports, declarations and upload times), ``runner`` (one run: judge, store,
write the report files, audit), ``scheduler`` (debouncing per prefecture on
worker threads), ``watcher`` (watchdog on the areas), ``service`` (the three
together inside a running server).
"""

from .records import Declaration
from .records import ReportRecord
from .runner import CATCH_UP
from .runner import COMMAND
from .runner import UPLOAD
from .runner import Outcome
from .runner import Prereviewer
from .runner import configured_checklist
from .service import PrereviewService
from .source import HTML_REPORT
from .source import MARKER_NAME
from .source import TEXT_REPORT
from .source import StorageSource
from .source import is_marker

__all__ = [
    "CATCH_UP",
    "COMMAND",
    "HTML_REPORT",
    "MARKER_NAME",
    "TEXT_REPORT",
    "UPLOAD",
    "Declaration",
    "Outcome",
    "PrereviewService",
    "Prereviewer",
    "ReportRecord",
    "StorageSource",
    "configured_checklist",
    "is_marker",
]
