"""Kernel parity check: this interpreter has no network, as a Kaggle kernel with internet off.

Standard library only: src/kaggle/local/offline_sandbox.py copies this file into the sandbox as sitecustomize.py.
"""

import errno
import os
import socket

_LOG = os.environ.get("KERNEL_CHECK_NETWORK_LOG", "")
_INET = (socket.AF_INET, socket.AF_INET6)


def _note(what):
    if _LOG:
        with open(_LOG, "a", encoding="utf-8") as handle:
            handle.write(what + "\n")


def _refused(what):
    _note(what)
    return OSError(errno.ENETUNREACH, "network is unreachable (offline kernel check)")


_connect, _connect_ex, _sendto = socket.socket.connect, socket.socket.connect_ex, socket.socket.sendto


def _guarded_connect(self, address):
    if self.family in _INET:
        raise _refused(f"connect {address!r}")
    return _connect(self, address)


def _guarded_connect_ex(self, address):
    if self.family in _INET:
        _note(f"connect {address!r}")
        return errno.ENETUNREACH
    return _connect_ex(self, address)


def _guarded_sendto(self, data, *args):
    if self.family in _INET:
        raise _refused(f"sendto {args[-1]!r}")
    return _sendto(self, data, *args)


def _guarded_getaddrinfo(host, *args, **kwargs):
    _note(f"resolve {host!r}")
    raise socket.gaierror(socket.EAI_NONAME, "name resolution is off (offline kernel check)")


def install():
    """Guard this interpreter's sockets and name lookups, then say so through the ready flag."""
    socket.socket.connect = _guarded_connect
    socket.socket.connect_ex = _guarded_connect_ex
    socket.socket.sendto = _guarded_sendto
    socket.getaddrinfo = _guarded_getaddrinfo
    if os.environ.get("KERNEL_CHECK_READY"):
        open(os.environ["KERNEL_CHECK_READY"], "w").close()


# Only as the offline sandbox's sitecustomize: importing this module anywhere else must not cut the network.
if __name__ == "sitecustomize":
    install()
