"""Benchmark: the gradient all-reduce between miners against Gloo and a raw-socket limit.

For 2 and 4 peers on loopback, every peer holding ``--mib`` MiB of float32 gradients, one
run times, side by side, each peer in its own process:

- ``gloo``: ``torch.distributed.all_reduce`` with the Gloo backend (the reference);
- ``tcp``: our reduce-scatter + all-gather (:class:`GradientExchange`) over the plain TCP
  channel (no authentication);
- ``auth`` / ``aead``: the same over ``node.transport`` (authenticated only / authenticated
  and AEAD-encrypted), when that package is importable;
- ``raw``: the same two all-to-all phases over bare blocking sockets, no framing and no
  arithmetic: the limit of this exchange pattern on this machine.

Bandwidth is algorithm bandwidth: buffer bytes / round time (the same for every mode), the
round time of an iteration being the slowest peer's; a mode's time is the median over
``--iters`` rounds, the best of ``--repeats`` runs that interleave the modes (on a shared
machine, other tenants only ever slow a run down). It also measures the bytes a peer sends
for a one-sub-network step of the full OFA-MobileNetV3 supernet as a fraction of a dense
exchange, against the fraction of weight elements that sub-network uses.

It also times one ``--message-mib`` message through ``node.transport`` (AEAD and
authenticated-only, both ends in one process, the receiver recycling its payload buffer as
the gradient channel does) against a bare streamed aiohttp upload of the same bytes into a
preallocated buffer: the transport's own overhead, apart from the exchange (MB/s, median of
``--message-repeats``).

Usage: python bench/allreduce.py [--mib 100] [--iters 3] [--peers 2 4] [--repeats 3]
                                 [--message-mib 100] [--message-repeats 5]
Last line of output: one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from node.ports import free_port


def _gloo_worker(rank: int, n: int, port: int, elems: int, iters: int, q: mp.Queue) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=n)
    x = torch.rand(elems)
    times = []
    for i in range(iters + 1):
        dist.barrier()
        t0 = time.perf_counter()
        dist.all_reduce(x)
        if i:
            times.append(time.perf_counter() - t0)
    dist.destroy_process_group()
    q.put((rank, times))


def _exchange_worker(
    rank: int,
    n: int,
    ports: list[int],
    elems: int,
    iters: int,
    q: mp.Queue,
    mode: str,
    keys: list[str],
) -> None:
    from miner.distributed.exchange import ExchangeConfig, GradientExchange
    from miner.distributed.robust import RobustConfig

    async def run() -> list[float]:
        channel, close, names = await _open_channel(mode, rank, ports, keys)
        config = ExchangeConfig(round_timeout_s=300.0, robust=RobustConfig(clip="none"))
        exchange = GradientExchange(channel, names, config)
        x = np.random.default_rng(rank).random(elems, dtype=np.float32)
        out = np.empty_like(x)  # like Gloo's in-place result: no fresh array per round
        times = []
        try:
            for i in range(iters + 1):
                t0 = time.perf_counter()
                await exchange.allreduce(i, x, out=out)
                if i:
                    times.append(time.perf_counter() - t0)
            await asyncio.sleep(0.5)  # let the last frames drain before closing
        finally:
            await close()
        # the result must be the mean of every peer's buffer (checked on a prefix)
        want = np.mean(
            [np.random.default_rng(r).random(1000, dtype=np.float32) for r in range(n)], 0
        )
        if not np.allclose(out[:1000], want, rtol=1e-5, atol=1e-6):
            raise RuntimeError(f"{mode}: wrong all-reduce result on peer {rank}")
        return times

    try:
        q.put((rank, asyncio.run(run())))
    except Exception as exc:  # report, don't leave the parent waiting
        q.put((rank, f"{type(exc).__name__}: {exc}"))


async def _open_channel(mode: str, rank: int, ports: list[int], keys: list[str]):
    """(channel, async close, peer names) for ``mode``: plain TCP or the transport."""
    if mode == "tcp":
        from miner.distributed.tcp_channel import TcpChannel

        names = [f"peer{i}" for i in range(len(ports))]
        addresses = {name: ("127.0.0.1", port) for name, port in zip(names, ports, strict=True)}
        channel = await TcpChannel.create(names[rank], addresses)
        return channel, channel.shutdown, names
    from eth_account import Account

    from miner.distributed.transport_channel import TransportChannel
    from node.transport import Mode, TransportServer

    accounts = [Account.from_key(k) for k in keys]
    names = [a.address for a in accounts]

    async def membership(task_id: int, address: str) -> bool:
        return address in names

    me = accounts[rank]
    server = await TransportServer.create(me, membership, port=ports[rank])
    urls = {a.address: f"http://127.0.0.1:{p}" for a, p in zip(accounts, ports, strict=True)}
    del urls[me.address]
    mode_ = Mode.AEAD if mode == "aead" else Mode.AUTH
    channel = TransportChannel.attach(server, me, urls, task_id=1, mode=mode_)

    async def close() -> None:
        await channel.shutdown()
        await server.shutdown()

    return channel, close, names


def _raw_worker(rank: int, n: int, ports: list[int], nbytes: int, iters: int, q: mp.Queue) -> None:
    server = socket.create_server(("127.0.0.1", ports[rank]))
    out: dict[int, socket.socket] = {}
    for peer in range(n):
        if peer != rank:
            out[peer] = _connect(ports[peer])
            out[peer].sendall(rank.to_bytes(4, "little"))
    inc: dict[int, socket.socket] = {}
    while len(inc) < n - 1:
        conn, _ = server.accept()
        inc[int.from_bytes(_recv_exact(conn, 4), "little")] = conn
    part = nbytes // n
    send_buf = bytearray(part)
    recv_bufs = {peer: bytearray(part) for peer in inc}
    times = []
    for i in range(iters + 1):
        t0 = time.perf_counter()
        for _ in range(2):  # reduce-scatter, then all-gather
            threads = [threading.Thread(target=s.sendall, args=(send_buf,)) for s in out.values()]
            threads += [
                threading.Thread(target=_recv_into, args=(inc[p], recv_bufs[p])) for p in inc
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        if i:
            times.append(time.perf_counter() - t0)
    time.sleep(0.2)
    q.put((rank, times))


def _connect(port: int) -> socket.socket:
    for _ in range(200):
        try:
            return socket.create_connection(("127.0.0.1", port))
        except OSError:
            time.sleep(0.05)
    raise OSError(f"cannot connect to {port}")


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray(n)
    _recv_into(sock, buf)
    return bytes(buf)


def _recv_into(sock: socket.socket, buf: bytearray) -> None:
    view, got = memoryview(buf), 0
    while got < len(buf):
        k = sock.recv_into(view[got:])
        if not k:
            raise ConnectionError("peer closed")
        got += k


def _run(mode: str, n: int, elems: int, iters: int, keys: list[str]) -> float:
    """Median round time (slowest peer per iteration) of ``mode`` with ``n`` peers."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    ports = [free_port() for _ in range(n)]
    procs = []
    for rank in range(n):
        if mode == "gloo":
            args: tuple = (_gloo_worker, (rank, n, ports[0], elems, iters, q))
        elif mode == "raw":
            args = (_raw_worker, (rank, n, ports, elems * 4, iters, q))
        else:
            args = (_exchange_worker, (rank, n, ports, elems, iters, q, mode, keys))
        procs.append(ctx.Process(target=args[0], args=args[1]))
    for p in procs:
        p.start()
    results = dict(q.get(timeout=900) for _ in procs)
    failures = [r for r in results.values() if isinstance(r, str)]
    if failures:
        raise RuntimeError(f"{mode} with {n} peers failed: {failures[0]}")
    for p in procs:
        p.join()
    per_iter = [max(results[r][i] for r in results) for i in range(iters)]
    return statistics.median(per_iter)


def _sparse_fraction() -> dict[str, float]:
    """Bytes sent for a one-sub-network step of the full OFA-MobileNetV3, vs dense."""
    import torch

    from miner.automl.space import sample_step
    from miner.automl.supernet import OFASupernet, SupernetConfig
    from miner.distributed.averager import supernet_masks
    from miner.distributed.channel import InMemoryHub
    from miner.distributed.exchange import ExchangeConfig, GradientExchange
    from miner.distributed.layout import FlatLayout
    from miner.distributed.robust import RobustConfig

    torch.manual_seed(0)
    model = OFASupernet(SupernetConfig())
    arch = sample_step(model.space, seed=1, step=0, n=1)[0]
    layout = FlatLayout.from_masks(supernet_masks(model)([arch]))
    used_fraction = layout.size / layout.dense_size
    values = np.random.default_rng(0).random(layout.size, dtype=np.float32)
    hub, names = InMemoryHub(), ["a", "b"]
    config = ExchangeConfig(robust=RobustConfig(clip="none"))
    group = [GradientExchange(ch, names, config) for ch in hub.channels(names)]

    async def one_round() -> None:
        await asyncio.gather(*(ex.allreduce(0, values) for ex in group))

    asyncio.run(one_round())
    dense_bytes = 2 * (len(names) - 1) / len(names) * 4 * layout.dense_size
    sent_fraction = hub.bytes_sent["a"] / dense_bytes
    return {
        "sparse_used_fraction": used_fraction,
        "sparse_sent_fraction": sent_fraction,
        "sparse_bytes_excess": sent_fraction - used_fraction,
        "sparse_dense_elements": layout.dense_size,
    }


async def _upload_seconds(nbytes: int, repeats: int) -> float:
    """Median seconds of a streamed aiohttp upload (1 MiB pieces) into a reused buffer."""
    import aiohttp
    from aiohttp import web

    sink = memoryview(bytearray(nbytes))

    async def receive(request: web.Request) -> web.Response:
        got = 0
        while block := await request.content.read(4 << 20):
            sink[got : got + len(block)] = block
            got += len(block)
        return web.Response(body=b"ok" if got == nbytes else b"short")

    app = web.Application()
    app.router.add_post("/upload", receive)
    runner = web.AppRunner(app, access_log=None, read_bufsize=8 << 20)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/upload"
    data = memoryview(np.random.default_rng(0).bytes(nbytes))

    async def body():  # type: ignore[no-untyped-def]
        for start in range(0, nbytes, 1 << 20):
            yield data[start : start + (1 << 20)]

    times = []
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(repeats):
                t0 = time.perf_counter()
                headers = {"Content-Length": str(nbytes)}
                async with http.post(url, data=body(), headers=headers) as response:
                    if await response.read() != b"ok":
                        raise RuntimeError("upload arrived short")
                times.append(time.perf_counter() - t0)
    finally:
        await runner.cleanup()
    return statistics.median(times)


async def _message_seconds(nbytes: int, repeats: int, aead: bool) -> float:
    """Median seconds of one transport message of ``nbytes`` (send until the reply)."""
    from eth_account import Account

    from node.transport import IncomingMessage, Mode, PeerClient, TransportServer

    sender, receiver = Account.create(), Account.create()

    async def membership(task_id: int, address: str) -> bool:
        return address == sender.address

    server = await TransportServer.create(receiver, membership)
    spare: list[memoryview] = []
    data = np.random.default_rng(1).bytes(nbytes)

    async def keep(message: IncomingMessage) -> None:
        if bytes(message.payload[-64:]) != data[-64:]:
            raise RuntimeError("message arrived corrupted")
        spare.append(memoryview(message.payload))

    server.register(
        "keep", keep, allocate=lambda n: spare.pop() if spare else np.empty(n, np.uint8).data
    )
    mode = Mode.AEAD if aead else Mode.AUTH
    client = await PeerClient.create(sender, server.url, receiver.address, 1, mode=mode)
    times = []
    try:
        for _ in range(repeats):
            t0 = time.perf_counter()
            await client.send("keep", data)
            times.append(time.perf_counter() - t0)
    finally:
        await client.shutdown()
        await server.shutdown()
    return statistics.median(times)


def _message_throughput(mib: float, repeats: int) -> dict[str, float]:
    """MB/s of one message: bare aiohttp upload, transport AUTH, transport AEAD (interleaved)."""
    nbytes = int(mib * 2**20)
    runs: dict[str, list[float]] = {"upload": [], "auth": [], "aead": []}
    for _ in range(2):  # two interleaved passes: the machine's load drifts
        runs["upload"].append(asyncio.run(_upload_seconds(nbytes, repeats)))
        runs["auth"].append(asyncio.run(_message_seconds(nbytes, repeats, aead=False)))
        runs["aead"].append(asyncio.run(_message_seconds(nbytes, repeats, aead=True)))
    out = {f"message_{k}_mbps": round(nbytes / min(v) / 1e6, 1) for k, v in runs.items()}
    for key in ("auth", "aead"):
        out[f"message_{key}_vs_upload"] = round(
            out[f"message_{key}_mbps"] / out["message_upload_mbps"], 3
        )
    return out


def _transport_available() -> bool:
    try:
        import miner.distributed.transport_channel  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=float, default=100.0)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--peers", type=int, nargs="+", default=[2, 4])
    parser.add_argument(
        "--repeats", type=int, default=3, help="interleaved runs of every mode; the best is kept"
    )
    parser.add_argument("--message-mib", type=float, default=100.0)
    parser.add_argument("--message-repeats", type=int, default=5)
    args = parser.parse_args()
    elems = int(args.mib * 2**20) // 4
    nbytes = elems * 4
    modes = ["gloo", "raw", "tcp"] + (["auth", "aead"] if _transport_available() else [])
    keys: list[str] = []
    if _transport_available():
        from eth_account import Account

        keys = [Account.create().key.hex() for _ in range(max(args.peers))]  # throwaway
    out: dict[str, float | int | str | None] = {
        "mib": args.mib,
        "iters": args.iters,
        "repeats": args.repeats,
    }
    for n in args.peers:
        # Repeats interleave the modes (gloo, raw, tcp, auth, aead, gloo, ...) so that a
        # quiet or a busy stretch of a shared machine falls on every mode alike.
        best: dict[str, float] = {}
        for _ in range(args.repeats):
            for mode in modes:
                seconds = _run(mode, n, elems, args.iters, keys[:n])
                best[mode] = min(best.get(mode, seconds), seconds)
        for mode in modes:
            seconds = best[mode]
            out[f"{mode}_{n}peers_s"] = round(seconds, 4)
            out[f"{mode}_{n}peers_algbw_gbps"] = round(nbytes / seconds / 1e9, 3)
            print(
                f"{mode:5s} peers={n} round={seconds:.3f}s algbw={nbytes / seconds / 1e9:.3f} GB/s"
            )
        gloo = out[f"gloo_{n}peers_s"]
        for mode in modes[1:]:
            out[f"ratio_vs_gloo_{mode}_{n}peers"] = round(gloo / out[f"{mode}_{n}peers_s"], 3)
    for key in ("aead", "auth"):
        out.setdefault(f"ratio_vs_gloo_{key}_2peers", None)
    if _transport_available() and args.message_repeats > 0:
        message = _message_throughput(args.message_mib, args.message_repeats)
        for key in ("upload", "auth", "aead"):
            print(
                f"message {key:6s} {args.message_mib:g} MiB: {message[f'message_{key}_mbps']} MB/s"
            )
        out.update(message)
    out.update({k: round(v, 6) for k, v in _sparse_fraction().items()})
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
