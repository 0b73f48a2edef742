"""Generated gRPC code for KubeVirt's hook protocols: the *_pb2*, *_grpc.py files here are written by
generate.sh from our own .proto files and never edited by hand. Left out of coverage, lint and
duplicate-code counts."""
