#!/usr/bin/python3
"""Opens gRPC server-streaming watch calls with grpcio (a real gRPC client) and reports how each ends.

stdin: one JSON line [[id, port, key], ...]; then the script runs until stdin closes.
stdout (one line each, flushed): "first <id> <pod>" on a call's first message, "end <id> <CODE> <details>" when it ends.
One channel per sidecar port, shared by its calls (HTTP/2 multiplexing, so GOAWAY matters)."""
import json
import sys
import threading

import grpc

lock = threading.Lock()


def say(line):
    with lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def watch(channel, stream_id, key):
    call = channel.unary_stream("/echo.Echo/Watch", request_serializer=None, response_deserializer=None)
    first = True
    try:
        for message in call(b"watch", metadata=[("x-shard-key", key)]):
            if first:
                say("first %d %s" % (stream_id, message.decode().split(":")[0]))
                first = False
        say("end %d OK -" % stream_id)
    except grpc.RpcError as error:
        details = (error.details() or "-").replace("\n", " ")
        say("end %d %s %s" % (stream_id, error.code().name, details))


def main():
    spec = json.loads(sys.stdin.readline())
    channels = {}
    for stream_id, port, key in spec:
        if port not in channels:
            channels[port] = grpc.insecure_channel("127.0.0.1:%d" % port, options=[("grpc.enable_retries", 0)])
        threading.Thread(target=watch, args=(channels[port], stream_id, key), daemon=True).start()
    sys.stdin.read()  # until the test closes stdin
    for channel in channels.values():
        channel.close()


main()
