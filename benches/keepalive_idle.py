"""Proxy memory per idle keep-alive connection: CONNECTIONS plaintext HTTP/1.1 connections each
make one passthrough GET (/api/v2/stream/status), read the whole answer and stay open, idle.
Prints the proxy's RSS growth per connection. Loopback only; at most 200 opening at once; each
step bounded in time.

    python3 benches/keepalive_idle.py PORT PROXY_PID CONNECTIONS
"""
import asyncio
import sys

REQUEST = (b"GET /api/v2/stream/status HTTP/1.1\r\nhost: localhost\r\n"
           b"user-agent: keepalive-idle\r\naccept: */*\r\n\r\n")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SystemExit(f"no VmRSS for {pid}")


async def open_one(port, held):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(REQUEST)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    if not lines[0].startswith(b"http/1.1 200"):
        raise SystemExit(f"unexpected answer: {lines[0]!r}")
    length = [int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length:")]
    if length:
        await reader.readexactly(length[0])
    else:
        await reader.readuntil(b"\r\n0\r\n\r\n")
    held.append(writer)


async def main(port, pid, count):
    held = []
    # A few first, so lazy allocations and the origin pool's connections are not counted.
    await asyncio.wait_for(asyncio.gather(*(open_one(port, held) for _ in range(50))), 30)
    await asyncio.sleep(0.5)
    before = rss_kib(pid)
    gate = asyncio.Semaphore(200)

    async def gated():
        async with gate:
            await open_one(port, held)

    await asyncio.wait_for(asyncio.gather(*(gated() for _ in range(count))), 120)
    await asyncio.sleep(1.0)
    after = rss_kib(pid)
    print(f"{'keep-alive, idle':<22} {count:>6} connections | proxy RSS {before:>7} -> {after:>7} KiB | "
          f"{(after - before) / count:5.1f} KiB per connection (after one passthrough GET each)")
    for writer in held:
        writer.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])))
