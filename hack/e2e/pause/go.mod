// The e2e node's sandbox image (hack/e2e-cluster.sh); standard library only.
module rljob.local/hack/e2e/pause

go 1.25.0
