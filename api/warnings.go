package api

import "fmt"

// Warnings lists what is valid but likely not what the user meant, for
// apply and run to print.
func Warnings(o Object) []string {
	var out []string
	if s, ok := o.(*Service); ok && len(s.Spec.Template.Ports) == 0 {
		out = append(out, fmt.Sprintf("service %s has no ports: its virtual IP and DNS name %s.%s.berth will not answer; "+
			"list the ports it serves (ports: in the spec, --port with run)", s.Metadata.Name, s.Metadata.Name, s.Metadata.Namespace))
	}
	return out
}
