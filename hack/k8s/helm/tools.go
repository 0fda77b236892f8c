//go:build tools

// Package tools only records, for `go mod tidy`, the command that
// hack/cluster-bins.sh builds from this module; it is never compiled.
package tools

import _ "helm.sh/helm/v3/cmd/helm"
