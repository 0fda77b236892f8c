//go:build tools

// Package tools records the Kueue command that hack/cluster-bins.sh builds, so go.mod pins its dependencies.
package tools

import _ "sigs.k8s.io/kueue/cmd/kueue"
