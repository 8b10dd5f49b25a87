#!/usr/bin/env python3
"""Differential fuzz of cacheroute's HTTP/1.1 request parsing against h11.

Generates request messages (heads, then Content-Length or chunked bodies with trailers) from a
grammar of valid and invalid pieces plus byte-level mutations, runs each through h11 (as a server)
and through the router's own parser (Benchmarks/Sources/HeadFuzz), and compares the verdicts:
accepted (with the same framing, body length and bytes left for a next message), incomplete, or
refused. Every disagreement must match one of the explanations below, each a deliberate difference
(the router is stricter than h11 where leniency enables request smuggling, or it reads a message
in a way h11 leaves to the application); anything else is printed and the script exits 1.

    pip install h11
    python3 Benchmarks/fuzz_h11.py            # 10^6 messages, seed 1
    python3 Benchmarks/fuzz_h11.py --count 200000 --seed 7
"""
import argparse
import collections
import os
import random
import re
import struct
import subprocess
import sys
import time

try:
    import h11
except ImportError:
    sys.exit("fuzz_h11: needs h11 (pip install h11)")

HERE = os.path.dirname(os.path.abspath(__file__))

# --- generation -----------------------------------------------------------------------------------

METHODS = [b"POST"] * 30 + [b"GET"] * 10 + [b"PUT", b"DELETE", b"OPTIONS", b"post", b"M-SEARCH", b"G@T", b"", b"PO\x00ST", b"GET\x7f"]
TARGETS = [b"/v1/chat/completions"] * 30 + [
    b"/", b"/a?b=c&d", b"*", b"http://example.com/x", b"example.com:443", b"/a b", b"/\x7f", b"/%20", b"//x", b"/a#f",
    b"", b"/\x80", b"/v1/\x01", b"?q", b"/v1/../admin/replicas", b"/./v1/models", b"/v1/%2e%2e/x", b"HTTP://Example.com:8080/v1/models?a",
    b"http://example.com", b"https://h/v1/chat/completions",
]
VERSIONS = [b"HTTP/1.1"] * 40 + [b"HTTP/1.0"] * 4 + [b"HTTP/2.0", b"HTTP/1.2", b"http/1.1", b"HTTP/1", b"HTTP/1.10", b"HTTP/01.1", b"HTTP/1.1 ", b"HTTP /1.1"]
EOLS = [b"\r\n"] * 60 + [b"\n", b"\r", b"\r\r\n"]
NAMES = [b"x-session-id", b"content-type", b"user-agent", b"accept", b"x-a", b"X-Mixed-Case"] * 4 + [ b"x y", b"", b"x\x00", b"\xc3\xa4",
    b"x\"q", b"x(y)", b"x@y", b"x_y", b"x.y", b"~", b"x\t",
]
VALUES = [b"application/json", b"abc", b"", b" padded ", b"\ttabbed\t"] * 4 + [ b"a\x01b", b"a\x7fb", b"obs-\x80\xff-text", b"a, b", b"\"quoted\"",
    b"x" * 300, b"a\x00b", b"a\rb",
]
CONTENT_LENGTHS = [None] * 3 + ["ok"] * 6 + [b"05", b"+5", b"-1", b"5,5", b"5, 6", b"", b"1" * 20, b" 5 ", b"0x5", b"5 5", b"\x355"]
ENCODINGS = [b"chunked"] * 6 + [b"Chunked", b"gzip, chunked", b"chunked, gzip", b"identity", b"chunked;q=1", b" chunked", b"chunked,", b",chunked", b"chunk", b""]
CHUNK_SIZES = ["ok"] * 60 + [b"0x5", b"-5", b"5 ", b"5;ext", b"5;ext=\"q\"", b"5;", b"fffffffffffffffffff", b" 5", b"5\t", b"05"]
TRAILERS = [b"x-checksum: abc", b"x-a:1", b"x-b: \t two \t", b"x-empty:"] * 3 + [ b"nocolon", b"no colon here", b": noname", b" folded", b"x y: z",
    b"x-a: 1\x01", b"x-a: \x80", b"content-length: 5", b"x-a:\x00",
]


def chunked_body(r, body):
    out = b""
    pos = 0
    while pos < len(body):
        n = min(len(body) - pos, r.randint(1, 8))
        size = r.choice(CHUNK_SIZES)
        out += (b"%x" % n if size == "ok" else size) + r.choice(EOLS) + body[pos:pos + n] + r.choice(EOLS)
        pos += n
    out += b"0" + (r.choice([b"", b";last"]) if r.random() < 0.2 else b"") + r.choice(EOLS)
    for _ in range(r.choice([0, 0, 0, 1, 1, 2])):
        out += r.choice(TRAILERS) + r.choice(EOLS)
    if r.random() < 0.95:
        out += r.choice(EOLS)
    return out


def message(r):
    eol = b"\r\n" if r.random() < 0.95 else None
    def e():
        return eol or r.choice(EOLS)
    head = b""
    if r.random() < 0.05:
        head += r.choice([b"\r\n", b"\n", b"\r\n\r\n"])
    sp1 = b" " if r.random() < 0.95 else r.choice([b"  ", b"\t", b""])
    sp2 = b" " if r.random() < 0.95 else r.choice([b"  ", b"\t", b""])
    head += r.choice(METHODS) + sp1 + r.choice(TARGETS) + sp2 + r.choice(VERSIONS) + e()
    fields = []
    hosts = r.choice([1] * 20 + [0, 2])
    for _ in range(hosts):
        fields.append(b"host: " + r.choice([b"router", b"router:8080", b"", b"a b", b"[::1]:1"]))
    for _ in range(r.randint(0, 4)):
        fields.append(r.choice(NAMES) + r.choice([b": "] * 8 + [b":", b" : ", b"\t:", b":\t"]) + r.choice(VALUES))
    body = bytes(r.randint(97, 122) for _ in range(r.choice([0, 0, 5, 12, 40])))
    framing = r.random()
    if framing < 0.45:
        cl = r.choice(CONTENT_LENGTHS)
        if cl is not None:
            fields.append(b"content-length: " + (str(len(body)).encode() if cl == "ok" else cl))
            if r.random() < 0.05:
                fields.append(b"Content-Length: " + r.choice([str(len(body)).encode(), b"7"]))
        payload = body[: r.choice([len(body)] * 8 + [max(0, len(body) - 2)])] + (r.choice([b"", b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"]) if r.random() < 0.1 else b"")
    elif framing < 0.9:
        fields.append(b"transfer-encoding: " + r.choice(ENCODINGS))
        if r.random() < 0.08:
            fields.append(b"content-length: " + str(len(body)).encode())
        if r.random() < 0.04:
            fields.append(b"transfer-encoding: chunked")
        payload = chunked_body(r, body) + (b"GET / HTTP/1.1\r\nhost: x\r\n\r\n" if r.random() < 0.1 else b"")
    else:
        payload = b""
    if r.random() < 0.1:
        fields.append(b"connection: " + r.choice([b"close", b"keep-alive", b"x-a", b"upgrade"]))
    r.shuffle(fields)
    for f in fields:
        if r.random() < 0.01:
            head += r.choice([b" ", b"\t"])  # obsolete line folding
        head += f + e()
    head += e()
    data = head + payload
    # Byte-level mutations on a fraction of messages.
    if r.random() < 0.12:
        data = bytearray(data)
        for _ in range(r.randint(1, 3)):
            if not data:
                break
            i = r.randrange(len(data))
            op = r.random()
            if op < 0.5:
                data[i] = r.choice(b"\r\n\t :\x00\x7f\x80;,\"0aZ")
            elif op < 0.75:
                del data[i]
            else:
                data.insert(i, data[i])
        data = bytes(data)
    return data


# --- h11's verdict --------------------------------------------------------------------------------

def h11_verdict(data):
    c = h11.Connection(h11.SERVER, max_incomplete_event_size=65536)
    c.receive_data(data)
    try:
        ev = c.next_event()
        if ev is h11.NEED_DATA:
            return "incomplete"
        if not isinstance(ev, h11.Request):
            return "err other event %r" % (ev,)
        chunked = any(n == b"transfer-encoding" for n, _ in ev.headers)
        cl = [v for n, v in ev.headers if n == b"content-length"]
        framing = "chunked" if chunked else "cl=%d" % (int(cl[0]) if cl else 0)
        body = 0
        while True:
            ev = c.next_event()
            if ev is h11.NEED_DATA:
                return "incomplete"
            if isinstance(ev, h11.Data):
                body += len(ev.data)
            elif isinstance(ev, h11.EndOfMessage):
                break
        return "ok %s body=%d rest=%d" % (framing, body, len(c.trailing_data[0]))
    except h11.RemoteProtocolError as e:
        return "err " + str(e)


# --- explanations ---------------------------------------------------------------------------------
# Each: (name, why, predicate(data, ours, theirs)). A disagreement is explained by the first that holds.

def head_of(data):
    end = data.find(b"\r\n\r\n")
    return data if end < 0 else data[: end + 4]


def lines(data):
    return head_of(data).split(b"\r\n")


def refused_by_us(ours, theirs):
    return ours.startswith("err") and not theirs.startswith("err")


def first_line(data):
    d = data.lstrip(b"\r\n")
    return d.split(b"\n", 1)[0]


def has_bare_lf_or_cr(data):
    h = head_of(data)
    body = data[len(h):]
    def bad(b):
        return b.replace(b"\r\n", b"").count(b"\n") > 0 or b.replace(b"\r\n", b"").count(b"\r") > 0
    return bad(h) or (b"\r\n0" in data and bad(body))


def request_target(data):
    parts = first_line(data).split(b" ")
    return parts[1] if len(parts) >= 3 else b""


def te_values(data):
    return [line.split(b":", 1)[1].strip() for line in lines(data)[1:] if line.lower().startswith(b"transfer-encoding:")]


def bare_line_end(data):
    """A CR or LF that is not part of a CRLF pair."""
    stripped = data.replace(b"\r\n", b"")
    return b"\n" in stripped or b"\r" in stripped


def ours_says(*phrases):
    return lambda d, o, t: o.startswith("err") and any(p in o for p in phrases)


EXPLANATIONS = [
    ("obs-fold", "h11 joins a field line that starts with whitespace to the one before (obsolete line folding); "
     "cacheroute refuses it (RFC 9112 5.2 lets a server refuse it; nginx and HAProxy do)",
     ours_says("obsolete line folding")),
    ("target-form", "h11 accepts authority-form and other targets; cacheroute serves origin-form paths, absolute "
     "http(s) URLs with a path (RFC 9112 3.2.2) and '*' only: the APIs it fronts have nothing else",
     ours_says("origin form", "absolute-form target needs")),
    ("dot-segments", "cacheroute refuses '.' and '..' path segments (also as %2e): forwarded as they are, a server "
     "behind may resolve them to a path the router never routed; h11 leaves paths to the application",
     ours_says("dot-segments")),
    ("http-version", "cacheroute answers 505 to versions other than HTTP/1.0 and HTTP/1.1 (e.g. HTTP/1.2, HTTP/2.0 in "
     "an HTTP/1 request line); h11 reads any HTTP/x.y",
     ours_says("only HTTP/1.0 and HTTP/1.1 are served")),
    ("http10-te", "cacheroute refuses Transfer-Encoding in an HTTP/1.0 request (RFC 9112 6.1: a server must treat the "
     "message as faulty framing); h11 reads it",
     ours_says("Transfer-Encoding is not defined for HTTP/1.0")),
    ("te-and-cl", "a request with both Transfer-Encoding and Content-Length is refused by cacheroute (RFC 9112 6.1: a "
     "smuggling sign, which a server may refuse); h11 lets Transfer-Encoding win",
     ours_says("both Content-Length and Transfer-Encoding")),
    ("long-content-length", "cacheroute refuses a Content-Length of 16 digits or more (no body that large passes "
     "limits.max_body_bytes); h11 takes it and waits for the body",
     lambda d, o, t: o.startswith("err") and "invalid Content-Length" in o
     and any(len(v.strip()) >= 16 for line in lines(d)[1:] if line.lower().startswith(b"content-length:") for v in line.split(b":", 1)[1].split(b","))),
    ("chunk-size-digits", "cacheroute refuses chunk sizes of 16 hex digits or more; h11 reads them",
     ours_says("chunk size too large")),
    ("control-in-value", "cacheroute refuses control characters (other than HTAB) in field values, of heads and of "
     "trailers alike; h11 accepts those other than NUL, CR and LF",
     lambda d, o, t: ("invalid character in a header value" in o or "invalid character in a trailer value" in o) and not t.startswith("err")),
    ("trailer-line-by-line", "cacheroute judges each trailer line as it arrives and refuses a bad one at once; h11 "
     "waits for the empty line that ends the trailers before judging them",
     lambda d, o, t: o.startswith("err") and "trailer" in o and t == "incomplete"),
    ("bare-cr-lf", "h11 takes a bare LF as a line end, and a CR before CRLF as part of it; cacheroute requires exactly "
     "CRLF (RFC 9112 2.2 allows either; a proxy that is lenient in front of a strict server invites smuggling)",
     lambda d, o, t: bare_line_end(d) and (o.startswith("err") or o == "incomplete")),
    ("leading-empty-lines", "cacheroute skips empty lines (CRLF) before a request line, as RFC 9112 2.2 says a server "
     "SHOULD; h11 refuses them ('no request line received')",
     lambda d, o, t: "no request line received" in t and d[:2] == b"\r\n"),
    ("chunk-ext-bws", "cacheroute allows whitespace between a chunk size and its ';' extension (RFC 9112 7.1.1: BWS "
     "before ';'); h11 allows it only before the line end. Anything else after a size is refused by both",
     lambda d, o, t: not o.startswith("err") and t.startswith("err") and re.search(rb"[0-9a-fA-F][ \t]+;", d[len(head_of(d)):]) is not None),
    ("framing-field-in-trailer", "a Content-Length or Transfer-Encoding sent as a trailer field means nothing for "
     "framing (RFC 9110 6.5.1); cacheroute checks its syntax like any field and drops it, h11 also checks its value",
     lambda d, o, t: o.startswith("ok") and t.startswith("err") and re.search(rb"(?:^|\r\n)0[^\r]*\r\n(?:[^\r]*\r\n)*(?i:content-length|transfer-encoding):", d[len(head_of(d)):]) is not None),
    ("waits-for-the-head", "the head has not ended (no CRLF CRLF yet): cacheroute waits for the rest (bounded by "
     "limits.max_header_bytes and limits.header_timeout: 431 or 408) and judges it whole; h11 refuses a bad line as "
     "soon as it arrives. Nothing reaches a replica either way",
     lambda d, o, t: o == "incomplete" and b"\r\n\r\n" not in d.lstrip(b"\r\n")),
]


def explain(data, ours, theirs):
    for name, _, predicate in EXPLANATIONS:
        try:
            if predicate(data, ours, theirs):
                return name
        except Exception:
            continue
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--binary", default=None, help="the HeadFuzz executable (default: build it with swift build -c release)")
    parser.add_argument("--show", type=int, default=3, help="examples printed per explanation")
    args = parser.parse_args()

    binary = args.binary
    if binary is None:
        subprocess.run(["swift", "build", "-c", "release", "--product", "HeadFuzz"], cwd=HERE, check=True)
        binary = subprocess.run(["swift", "build", "-c", "release", "--show-bin-path"], cwd=HERE, check=True, capture_output=True, text=True).stdout.strip() + "/HeadFuzz"

    r = random.Random(args.seed)
    started = time.time()
    messages = [message(r) for _ in range(args.count)]
    generated = time.time()
    stream = b"".join(struct.pack("<I", len(m)) + m for m in messages)
    run = subprocess.run([binary], input=stream, capture_output=True, check=False)
    if run.returncode != 0:
        print(run.stderr.decode(errors="replace")[-2000:])
        sys.exit("fuzz_h11: the router's parser exited with %d (a crash)" % run.returncode)
    ours = run.stdout.decode().split("\n")[: args.count]
    if len(ours) != args.count:
        sys.exit("fuzz_h11: %d verdicts for %d messages" % (len(ours), args.count))
    parsed = time.time()

    outcome = collections.Counter()
    explained = collections.Counter()
    examples = collections.defaultdict(list)
    unexplained = []
    for data, o in zip(messages, ours):
        t = h11_verdict(data)
        kind_o, kind_t = o.split(" ", 1)[0], t.split(" ", 1)[0]
        outcome[(kind_o, kind_t)] += 1
        same = (o == t) if kind_o == "ok" and kind_t == "ok" else kind_o == kind_t
        if same:
            continue
        name = explain(data, o, t)
        if name is None:
            unexplained.append((data, o, t))
        else:
            explained[name] += 1
            if len(examples[name]) < args.show:
                examples[name].append((data, o, t))
    checked = time.time()

    print("fuzz_h11: %d messages (seed %d); generated in %.0f s, cacheroute parsed them in %.1f s, h11 in %.0f s"
          % (args.count, args.seed, generated - started, parsed - generated, checked - parsed))
    print("\nverdicts (cacheroute, h11):")
    for (a, b), n in sorted(outcome.items(), key=lambda kv: -kv[1]):
        print("  %-10s %-10s %8d" % (a, b, n))
    agree = sum(n for (a, b), n in outcome.items()) - sum(explained.values()) - len(unexplained)
    print("\nagreed: %d; disagreed: %d, explained %d, unexplained %d; crashes: 0"
          % (agree, sum(explained.values()) + len(unexplained), sum(explained.values()), len(unexplained)))
    for name, why, _ in EXPLANATIONS:
        if explained[name]:
            print("\n[%s] %d: %s" % (name, explained[name], why))
            for data, o, t in examples[name]:
                print("    %r\n      cacheroute: %s\n      h11:        %s" % (data[:160], o, t))
    if unexplained:
        print("\nUNEXPLAINED (%d):" % len(unexplained))
        for data, o, t in unexplained[:30]:
            print("    %r\n      cacheroute: %s\n      h11:        %s" % (data[:200], o, t))
        sys.exit(1)


if __name__ == "__main__":
    main()
