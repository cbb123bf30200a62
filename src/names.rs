//! Every identity string Winston uses toward Kubernetes, in one place.
