"""The report as a PDF: the HTML page printed by headless Chromium, and the PDF's page count.

:func:`html_to_pdf` runs Chromium (Debian's ``chromium``, which ``make setup`` installs) as a
subprocess: ``--headless --print-to-pdf`` of the page's ``file://`` URL, with a throw-away profile
(``--user-data-dir`` and ``HOME`` in a temporary folder: a worker's home may not be writable) and
without the browser's own header and footer (the page's print CSS sets the A4 page, its margins and
the page numbers). The PDF is written under a temporary name beside the target and renamed when it
is complete, so a failed print never leaves a partial ``report.pdf``.

The Chromium binary: the argument, else ``$LCMS_CHROMIUM``, else ``chromium`` (or
``chromium-browser``) on the PATH. Errors name the page and the binary: :class:`ChromiumNotFoundError`
when there is none, :class:`PdfRenderError` when it fails or times out.

:func:`page_count` asks ``pdfinfo`` (poppler-utils, installed by ``make setup``) and, without it,
counts the page objects of the file (enough for Chromium's PDFs, which do not compress them).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from lcms_tasks.errors import StageError

log = logging.getLogger(__name__)

#: Environment variable naming the Chromium binary (a path or a name on the PATH).
CHROMIUM_ENV = "LCMS_CHROMIUM"
#: Names looked up on the PATH, in order, when neither the caller nor the environment names a binary.
CHROMIUM_NAMES = ("chromium", "chromium-browser")
#: Seconds a print may take by default (a report prints in 1-3 s; a busy worker is slower).
DEFAULT_TIMEOUT_S = 120.0
# Chromium logs harmless D-Bus and GPU complaints on servers; they are left out of error messages.
_NOISE = re.compile(r"dbus|fontconfig|bytes written to file|:ERROR:(?:gpu|viz|ui/gl)", re.IGNORECASE)


class PdfRenderError(StageError):
    """The page could not be printed to PDF (Chromium failed, timed out or wrote no PDF)."""


class ChromiumNotFoundError(PdfRenderError, FileNotFoundError):
    """No Chromium binary: none given, none in ``$LCMS_CHROMIUM``, none on the PATH."""


def find_chromium(chromium: str | None = None) -> str | None:
    """The Chromium binary to use (absolute path), or None when there is none.

    ``chromium`` (an option) wins, then ``$LCMS_CHROMIUM``, then ``chromium``/``chromium-browser`` on the
    PATH. A name that is given but does not resolve gives None: it is not silently replaced by another.
    """
    wanted = chromium or os.environ.get(CHROMIUM_ENV) or None
    if wanted:
        return shutil.which(wanted)
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _where_chromium(chromium: str | None) -> str:
    """Where a Chromium binary was looked for, in words (for the missing-binary message)."""
    if chromium:
        return f"{chromium!r} is not an executable"
    if os.environ.get(CHROMIUM_ENV):
        return f"${CHROMIUM_ENV}={os.environ[CHROMIUM_ENV]!r} is not an executable"
    return f"none of {', '.join(CHROMIUM_NAMES)} is on the PATH (install Debian's chromium: make system-deps)"


def missing_chromium_reason(chromium: str | None = None) -> str:
    """Why there is no Chromium, in words (for the report and the error)."""
    return f"no Chromium to print the PDF: {_where_chromium(chromium)}"


def _stderr_tail(text: str, lines: int = 6) -> str:
    kept = [line.strip() for line in text.splitlines() if line.strip() and not _NOISE.search(line)]
    return "; ".join(kept[-lines:]) or "no error output"


def html_to_pdf(
    html_path: Path | str,
    pdf_path: Path | str,
    chromium: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Path:
    """Print the HTML page ``html_path`` to ``pdf_path`` with headless Chromium; returns ``pdf_path``.

    Relative links of the page (its images) resolve against its folder. ``ChromiumNotFoundError``
    without a Chromium binary, ``PdfRenderError`` (naming the page) if it fails, times out or writes no
    PDF; ``pdf_path`` is then left as it was.
    """
    html_path, pdf_path = Path(html_path).resolve(), Path(pdf_path)
    binary = find_chromium(chromium)
    if binary is None:
        raise ChromiumNotFoundError(f"{html_path}: cannot print to {pdf_path}: {missing_chromium_reason(chromium)}")
    if not html_path.is_file():
        raise PdfRenderError(f"{html_path}: cannot print to PDF: the page does not exist")
    pdf_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = pdf_path.with_name(f".{pdf_path.name}.printing-{os.getpid()}.pdf")
    with tempfile.TemporaryDirectory(prefix="lcms-chromium-") as profile:
        command = [
            binary,
            "--headless",
            "--no-sandbox",  # workers run as root or in containers without user namespaces
            "--disable-gpu",
            "--disable-dev-shm-usage",  # a container's /dev/shm is small
            "--disable-extensions",
            "--no-first-run",
            "--no-default-browser-check",
            "--hide-scrollbars",
            "--no-pdf-header-footer",
            f"--user-data-dir={profile}",
            f"--print-to-pdf={tmp}",
            html_path.as_uri(),
        ]
        env = {**os.environ, "HOME": profile, "XDG_CONFIG_HOME": profile, "XDG_CACHE_HOME": profile}
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, check=False)
        except subprocess.TimeoutExpired as err:
            tmp.unlink(missing_ok=True)
            raise PdfRenderError(f"{html_path}: Chromium ({binary}) did not print it within {timeout:g} s") from err
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise PdfRenderError(f"{html_path}: cannot run Chromium ({binary}): {err}") from err
    try:
        written = tmp.is_file() and tmp.stat().st_size > 0
        head = tmp.read_bytes()[:5] if written else b""
        if proc.returncode != 0 or head != b"%PDF-":
            what = f"exit status {proc.returncode}" if proc.returncode != 0 else "no PDF written"
            raise PdfRenderError(
                f"{html_path}: Chromium ({binary}) failed to print it to PDF ({what}): {_stderr_tail(proc.stderr)}"
            )
        os.replace(tmp, pdf_path)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("printed %s to %s (%d bytes)", html_path, pdf_path, pdf_path.stat().st_size)
    return pdf_path


def page_count(pdf_path: Path | str) -> int:
    """The number of pages of the PDF at ``pdf_path`` (``ValueError`` naming it if it cannot be told)."""
    path = Path(pdf_path)
    pdfinfo = shutil.which("pdfinfo")
    if pdfinfo is not None:
        proc = subprocess.run([pdfinfo, str(path)], capture_output=True, text=True, timeout=60, check=False)
        match = re.search(r"^Pages:\s+(\d+)\s*$", proc.stdout, flags=re.MULTILINE)
        if proc.returncode == 0 and match:
            return int(match.group(1))
        raise ValueError(f"{path}: pdfinfo cannot read it: {_stderr_tail(proc.stderr) or proc.stdout.strip()}")
    data = path.read_bytes()
    if not data.startswith(b"%PDF-"):
        raise ValueError(f"{path}: not a PDF file")
    # Page objects are '/Type /Page' (the page tree nodes are '/Type /Pages').
    pages = len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", data))
    if pages == 0:
        raise ValueError(f"{path}: no page objects found (compressed object streams need pdfinfo: poppler-utils)")
    return pages
