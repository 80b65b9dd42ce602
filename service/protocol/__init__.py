"""What the server and its clients share: error kinds and their codes, header names, ``ModelInfo``,
the wire encoding of arrays, and the generated gRPC code.

Imports only numpy, grpcio and protobuf, so ``service.client`` can use it without the server's
dependencies.
"""
