//go:build tools

// Package tools pins the main packages that build.sh builds; the build tag
// keeps it out of any build (a main package cannot be imported).
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
