"""Header (REST) and metadata (gRPC) names that server and client agree on; all lower case."""

API_KEY_HEADER = "x-api-key"  # the shared secret, when the server has API keys
AUTHORIZATION_HEADER = "authorization"  # or the key as "Bearer <key>"
REQUEST_ID_HEADER = "x-request-id"  # REST header and gRPC metadata: the client's id, echoed back
ERROR_KIND_KEY = "clipserve-error-kind"  # gRPC trailing metadata: the ErrorKind value
RETRY_AFTER_KEY = "retry-after"  # gRPC trailing metadata (REST: the Retry-After header): seconds
