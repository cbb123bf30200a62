// Command kstatus reads one Kubernetes object as JSON on stdin and prints
// what sigs.k8s.io/cli-utils' kstatus computes for it (the library Argo CD,
// Flux and kpt use to decide whether a resource is healthy), as a JSON
// object {"status": ..., "message": ...}.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

func main() {
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail("read stdin: %v", err)
	}
	// The unstructured decoder keeps integers as int64, as kstatus expects
	// of metadata.generation and status.observedGeneration.
	obj := &unstructured.Unstructured{}
	if err := obj.UnmarshalJSON(raw); err != nil {
		fail("decode the object: %v", err)
	}
	res, err := status.Compute(obj)
	if err != nil {
		fail("compute status: %v", err)
	}
	out, err := json.Marshal(map[string]string{"status": res.Status.String(), "message": res.Message})
	if err != nil {
		fail("encode the result: %v", err)
	}
	fmt.Println(string(out))
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "kstatus: "+format+"\n", args...)
	os.Exit(1)
}
