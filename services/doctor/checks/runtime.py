"""The machine the services run on: the compute device and the ports they listen on."""

from __future__ import annotations

import errno
import importlib.metadata
import json
import os
import socket
import urllib.request
from pathlib import Path

from services.doctor.model import CheckSpec, Context, Finding, describe


def _cpu_only_reason(version: str, visible: str | None) -> str | None:
    """Why torch can only use the CPU here, without importing it; None when a GPU may work."""
    if "+cpu" in version:
        return "CPU build"
    if visible is not None and visible.strip() in ("", "-1"):
        return "CUDA_VISIBLE_DEVICES hides the GPUs"
    if not any(Path("/dev").glob("nvidia[0-9]*")):
        return "no NVIDIA device"
    return None


def cuda(ctx: Context) -> Finding:
    """Which device the LSTM uses; with CUDA, how much GPU memory is left (OOM risk).

    torch is imported only when a GPU could be used (a CUDA build and an NVIDIA device):
    the import costs seconds, the answer for a CPU build or a GPU-less host does not."""
    name = "runtime.cuda"
    try:
        version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return Finding(
            name,
            "warn",
            "torch is not installed: LSTM forecasts and training are off, ARIMA serves",
            "pip install torch==2.13.0 (the CPU wheel is enough)",
        )
    why = _cpu_only_reason(version, ctx.environ.get("CUDA_VISIBLE_DEVICES"))
    if why is not None:
        return Finding(
            name,
            "ok",
            f"torch {version}, {why}: LSTM runs on CPU (supported)",
            data={"device": "cpu", "torch": version},
        )
    try:
        import torch
    except Exception as exc:  # noqa: BLE001
        return Finding(
            name,
            "warn",
            f"torch {version} cannot be imported ({describe(exc)}): LSTM is off, ARIMA serves",
            "reinstall torch==2.13.0 matching the CUDA driver (nvidia-smi shows its version)",
        )
    if not torch.cuda.is_available():
        return Finding(
            name,
            "warn",
            f"torch {version} and an NVIDIA device, but CUDA is unavailable: LSTM runs on CPU",
            "the driver does not match the torch CUDA build (nvidia-smi), or the container "
            "lacks the GPU runtime; CPU works, only slower",
            data={"device": "cpu", "torch": version},
        )
    devices = []
    low = []
    for device_index in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(device_index)
        gib = f"{free / 2**30:.1f}/{total / 2**30:.1f} GiB free"
        label = f"cuda:{device_index} {torch.cuda.get_device_name(device_index)} {gib}"
        devices.append(label)
        if total and free / total < 0.1:
            low.append(label)
    data = {"device": "cuda", "torch": version, "devices": devices}
    if low:
        return Finding(
            name,
            "warn",
            f"GPU memory nearly full: {'; '.join(low)} (CUDA out of memory likely)",
            "find the holder with nvidia-smi; run one training job per GPU, lower the LSTM "
            "batch size, or force CPU with CUDA_VISIBLE_DEVICES=''",
            data,
        )
    return Finding(name, "ok", f"torch {version}: {'; '.join(devices)}", data=data)


# --- ports ------------------------------------------------------------------------------


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if (
                len(fields) > 9
                and fields[3] == "0A"
                and int(fields[1].rsplit(":", 1)[1], 16) == port
            ):
                inodes.add(fields[9])
    return inodes


def port_owner(port: int) -> str | None:
    """``pid N (cmd)`` of the process listening on ``port`` when this user can see it."""
    inodes = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    if not inodes:
        return None
    for pid in (entry for entry in os.listdir("/proc") if entry.isdigit()):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            for fd in fds:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                    return f"pid {pid} ({cmd.decode(errors='replace').strip()[:80]})"
        except OSError:
            continue
    return None


def _in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def _is_pricecast(port: int, timeout_s: float) -> bool:
    """Whether ``/health`` on the port answers like a Pricecast service."""
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/health", timeout=timeout_s
        ) as response:
            body = json.loads(response.read(4096))
            return response.status == 200 and body == {"status": "ok"}
    except Exception:  # noqa: BLE001 - anything else is "not ours"
        return False


def ports(ctx: Context) -> Finding:
    """The API and worker ports: free, or held by a Pricecast service; anything else means
    the service will fail to start with 'address already in use'."""
    name = "runtime.ports"
    settings = ctx.settings
    wanted = {
        "api": (settings.api_port, "PRICECAST_API_PORT"),
        "ingest": (settings.ingest_health_port, "PRICECAST_INGEST_HEALTH_PORT"),
        "predict": (settings.predict_health_port, "PRICECAST_PREDICT_HEALTH_PORT"),
    }
    parts: list[str] = []
    foreign: list[str] = []
    fixes: list[str] = []
    data: dict[str, str] = {}
    for service, (port, env) in wanted.items():
        if not _in_use("0.0.0.0", port):  # noqa: S104 - probing, not serving
            parts.append(f"{service} {port} free")
            data[service] = "free"
        elif _is_pricecast(port, min(ctx.timeout_s / 3, 1.0)):
            parts.append(f"{service} {port} pricecast /health answers")
            data[service] = "pricecast"
        else:
            owner = port_owner(port) or "a process this user cannot see"
            foreign.append(f"{service} {port} held by {owner}")
            fixes.append(f"{env}=<free port>")
            data[service] = "foreign"
    if foreign:
        return Finding(
            name,
            "fail",
            "; ".join(foreign + parts),
            "stop the other process (ss -ltnp 'sport = :PORT' shows it) or move the service: "
            + ", ".join(fixes),
            data,
        )
    return Finding(name, "ok", "; ".join(parts), data=data)


CHECKS = (
    CheckSpec("runtime.cuda", cuda, timeout_factor=4.0, about="torch device and GPU memory"),
    CheckSpec("runtime.ports", ports, about="service ports free or held by Pricecast"),
)
