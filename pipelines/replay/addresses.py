"""Replay-server addresses and ports, checked without importing TensorFlow or Reverb.

pipelines-launch --role=actor --replay_address=HOST:PORT ...   # validated here first
"""

from __future__ import annotations

import socket

from pipelines.errors import PipelineError


def parse_address(address: str) -> tuple[str, int]:
  """'HOST:PORT' -> (host, port); anything else is one clear error."""
  host, sep, port = address.rpartition(":")
  if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
    raise PipelineError(f"bad --replay_address {address!r}: expected HOST:PORT, e.g. localhost:8008")
  try:
    socket.getaddrinfo(host, int(port))
  except socket.gaierror:
    raise PipelineError(f"bad --replay_address {address!r}: unknown host {host!r}") from None
  return host, int(port)


def check_port_free(port: int) -> None:
  """Reverb aborts the process on a port in use; say so in one line instead."""
  with socket.socket(socket.AF_INET6 if socket.has_ipv6 else socket.AF_INET) as s:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
      s.bind(("::" if socket.has_ipv6 else "", port))
    except OSError:
      raise PipelineError(f"port {port} is in use; pick another with --port") from None


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("", 0))
    return s.getsockname()[1]
