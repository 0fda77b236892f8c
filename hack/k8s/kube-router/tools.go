//go:build tools

// Package tools only records, for `go mod tidy`, the command that
// hack/e2e-cluster.sh builds from this module; it is never compiled.
package tools

import _ "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router"
