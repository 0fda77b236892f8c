// Command coredns is the e2e cluster's DNS server: CoreDNS with only the plugins a one-node test cluster needs
// (the full plugin set pulls every cloud provider's SDK and takes many minutes to build on two cores).
// Built by hack/e2e-cluster.sh bins; the Corefile is in tests/e2e/manifests/coredns.yaml.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

// The directives this build knows, in CoreDNS's own order (a subset of core/dnsserver/zdirectives.go).
func init() {
	dnsserver.Directives = []string{"errors", "log", "health", "ready", "loadbalance", "cache", "kubernetes"}
}

func main() { coremain.Run() }
