"""wds's own TFTP server: codec, per-transfer state machine, asyncio adapter (docs/TFTP.md)."""

from pxe.tftp.files import FileRefusal, FileSource, RootFileSource, ServedFile
from pxe.tftp.server import TftpServer, run_tftp_server

__all__ = [
    "FileRefusal",
    "FileSource",
    "RootFileSource",
    "ServedFile",
    "TftpServer",
    "run_tftp_server",
]
