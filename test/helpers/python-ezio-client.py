#!/usr/bin/python3
"""An EZIO client built by another toolchain: Debian's python3-grpcio and
python3-protobuf, with stubs that grpc_tools.protoc generates from
proto/ezio.proto at run time (into --stubs DIR). Clonezilla's helper scripts
talk to the EZIO daemon the same way.

Each command prints one JSON object on stdout; a gRPC error prints
{"error": {"code": NAME, "details": TEXT}} and exits 3.

  python-ezio-client.py --stubs DIR --proto-dir proto ADDR version
  ... ADDR add TORRENT SAVE_PATH [--seeding] [--max-uploads N] [--max-connections N] [--sequential]
  ... ADDR status [HASH ...]
  ... ADDR wait-finished HASH TIMEOUT_S     poll GetTorrentStatus every 0.2 s until is_finished
  ... ADDR pause HASH | resume HASH | shutdown
  ... ADDR raw /PKG.SERVICE/METHOD HEX      send these bytes as the request message
  ... ADDR reflect                          list services and call GetVersion through server reflection only
  ... - decode-status FILE                  decode a serialized UpdateStatus (no daemon)
"""
import argparse
import json
import os
import subprocess
import sys
import time


def generate_stubs(proto_dir, out):
    os.makedirs(out, exist_ok=True)
    if not os.path.exists(os.path.join(out, "ezio_pb2_grpc.py")):
        subprocess.run(
            [sys.executable, "-m", "grpc_tools.protoc", "-I", proto_dir, "--python_out=" + out, "--grpc_python_out=" + out,
             os.path.join(proto_dir, "ezio.proto"), os.path.join(proto_dir, "grpc-reflection.proto")],
            check=True)
    sys.path.insert(0, out)


def torrent_json(t):
    return {name: getattr(t, name) for name in t.DESCRIPTOR.fields_by_name}


def status_json(reply):
    return {"hashes": list(reply.hashes), "torrents": {h: torrent_json(t) for h, t in reply.torrents.items()}}


def reflect(channel):
    """What grpcurl does: descriptors from the server, then a call built from them alone."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    import grpc_reflection_pb2 as rpb
    import grpc_reflection_pb2_grpc as rgrpc

    stub = rgrpc.ServerReflectionStub(channel)

    def ask(**kw):
        return next(iter(stub.ServerReflectionInfo(iter([rpb.ServerReflectionRequest(host="", **kw)]))))

    services = [s.name for s in ask(list_services="*").list_services_response.service]
    pool = descriptor_pool.DescriptorPool()
    seen = set()
    streaming = {}
    for svc in services:
        for raw in ask(file_containing_symbol=svc).file_descriptor_response.file_descriptor_proto:
            fd = descriptor_pb2.FileDescriptorProto.FromString(raw)
            if fd.name not in seen:
                pool.Add(fd)
                seen.add(fd.name)
                for s in fd.service:
                    for m in s.method:
                        streaming[fd.package + "." + s.name + "/" + m.name] = [m.client_streaming, m.server_streaming]
    missing = ask(file_containing_symbol="no.such.Symbol").error_response
    factory = message_factory.MessageFactory(pool)
    method = pool.FindServiceByName("ezio.EZIO").methods_by_name["GetVersion"]
    req_cls = factory.GetPrototype(method.input_type)
    res_cls = factory.GetPrototype(method.output_type)
    call = channel.unary_unary("/ezio.EZIO/GetVersion", request_serializer=req_cls.SerializeToString,
                               response_deserializer=res_cls.FromString)
    status = pool.FindServiceByName("ezio.EZIO").methods_by_name["GetTorrentStatus"]
    torrent_fields = {f.name: f.number for f in status.output_type.fields_by_name["torrents"].message_type.fields_by_name["value"].message_type.fields}
    bsw = pool.FindServiceByName("blockswarm.v1.Blockswarm")
    return {
        "services": services,
        "files": sorted(seen),
        "version": call(req_cls()).version,
        "torrentFields": torrent_fields,
        "blockswarmMethods": sorted(m.name for m in bsw.methods),
        "streaming": streaming,
        "missingSymbol": {"code": missing.error_code, "message": missing.error_message},
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--stubs", required=True)
    p.add_argument("--proto-dir", required=True)
    p.add_argument("addr")
    p.add_argument("cmd")
    p.add_argument("args", nargs="*")
    p.add_argument("--seeding", action="store_true")
    p.add_argument("--sequential", action="store_true")
    p.add_argument("--max-uploads", type=int, default=0)
    p.add_argument("--max-connections", type=int, default=0)
    a = p.parse_args()
    generate_stubs(a.proto_dir, a.stubs)
    import grpc
    import ezio_pb2 as pb
    import ezio_pb2_grpc as pbgrpc

    if a.cmd == "decode-status":
        with open(a.args[0], "rb") as f:
            print(json.dumps(status_json(pb.UpdateStatus.FromString(f.read()))))
        return 0

    channel = grpc.insecure_channel(a.addr)
    stub = pbgrpc.EZIOStub(channel)
    try:
        if a.cmd == "version":
            out = {"version": stub.GetVersion(pb.Empty(), timeout=10).version}
        elif a.cmd == "add":
            with open(a.args[0], "rb") as f:
                req = pb.AddRequest(torrent=f.read(), save_path=a.args[1], seeding_mode=a.seeding,
                                    max_uploads=a.max_uploads, max_connections=a.max_connections,
                                    sequential_download=a.sequential)
            out = {"result": stub.AddTorrent(req, timeout=60).result}
        elif a.cmd == "status":
            out = status_json(stub.GetTorrentStatus(pb.UpdateRequest(hashes=a.args), timeout=10))
        elif a.cmd == "wait-finished":
            deadline = time.monotonic() + float(a.args[1])
            polls = []
            while True:
                reply = stub.GetTorrentStatus(pb.UpdateRequest(hashes=[a.args[0]]), timeout=10)
                t = reply.torrents[a.args[0]]
                polls.append({"state": t.state, "progress": t.progress, "total": t.total, "total_done": t.total_done,
                              "num_pieces": t.num_pieces})
                if t.is_finished:
                    out = {"polls": polls, "final": status_json(reply)}
                    break
                if time.monotonic() > deadline:
                    out = {"timeout": True, "polls": polls[-5:]}
                    break
                time.sleep(0.2)
        elif a.cmd == "pause":
            stub.PauseTorrent(pb.PauseTorrentRequest(hash=a.args[0]), timeout=10)
            out = {"paused": a.args[0]}
        elif a.cmd == "resume":
            stub.ResumeTorrent(pb.ResumeTorrentRequest(hash=a.args[0]), timeout=10)
            out = {"resumed": a.args[0]}
        elif a.cmd == "shutdown":
            stub.Shutdown(pb.Empty(), timeout=10)
            out = {"shutdown": True}
        elif a.cmd == "raw":
            call = channel.unary_unary(a.args[0])
            out = {"reply": call(bytes.fromhex(a.args[1]), timeout=10).hex()}
        elif a.cmd == "reflect":
            out = reflect(channel)
        else:
            p.error("unknown command " + a.cmd)
    except grpc.RpcError as e:
        print(json.dumps({"error": {"code": e.code().name, "details": e.details()}}))
        return 3
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
