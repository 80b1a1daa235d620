package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"sigs.k8s.io/yaml"
)

// The flat shapes users write in spec files: kind and metadata at the top
// level next to the spec's fields.
type serviceDoc struct {
	docMeta
	ServiceSpec
}

type jobDoc struct {
	docMeta
	JobSpec
}

type cronJobDoc struct {
	docMeta
	CronJobSpec
}

// dataDoc is a Config or Secret: data in base64, or stringData as text.
type dataDoc struct {
	docMeta
	Data       map[string][]byte `json:"data,omitempty"`
	StringData map[string]string `json:"stringData,omitempty"`
	// Type is a secret's (api.SecretTypeRegistryAuth); configs have none.
	Type string `json:"type,omitempty"`
}

func (d dataDoc) data() map[string][]byte {
	out := d.Data
	for k, v := range d.StringData {
		if out == nil {
			out = map[string][]byte{}
		}
		out[k] = []byte(v)
	}
	return out
}

type docMeta struct {
	Kind      Kind              `json:"kind"`
	Name      string            `json:"name"`
	Namespace string            `json:"namespace,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
}

func (d docMeta) metadata() Metadata {
	return Metadata{Kind: d.Kind, Name: d.Name, Namespace: d.Namespace, Labels: d.Labels}
}

var docSeparator = lazyRegexp(`(?m)^---[ \t]*(#.*)?$`)

// ParseSpecs parses a spec file: YAML documents separated by "---", each
// a Service or a Job in the flat shape
//
//	kind: Service
//	name: web
//	replicas: 3
//	template: {image: demo/busybox:1}
//
// Unknown fields are rejected. Objects come back defaulted and validated;
// errors name the file, the document (counting from 1), the object and
// the field:
//
//	web.yaml: document 2 (Service "web"): template.resources.memory: invalid quantity "64MB": ...
//
// and are in the errdefs.ErrInvalidArgument category. Every document is
// checked, and every error is returned.
//
// A document may also be an object in the API's shape, as `berth get -o
// yaml` prints it (kind, metadata, spec, status), or a list of them (-o
// json of a list); its status and server-set metadata (uid, revision,
// creation time) are dropped, so that what was read applies again as is.
func ParseSpecs(file string, data []byte) ([]Object, error) {
	return ParseSpecsIn(file, data, DefaultNamespace)
}

// ParseSpecsIn is ParseSpecs with namespace for the objects that name none.
func ParseSpecsIn(file string, data []byte, namespace string) ([]Object, error) {
	var objs []Object
	var errList []error
	n := 0
	for _, doc := range docSeparator().Split(string(data), -1) {
		if isBlankYAML(doc) {
			continue
		}
		items, err := listItems([]byte(doc))
		if err != nil {
			n++
			errList = append(errList, fmt.Errorf("%s: document %d: %w", file, n, err))
			continue
		}
		for _, item := range items {
			n++
			obj, err := parseDoc(item, namespace)
			if err != nil {
				errList = append(errList, fmt.Errorf("%s: document %d%s: %w", file, n, describeDoc(item), err))
				continue
			}
			objs = append(objs, obj)
		}
	}
	if len(errList) > 0 {
		return nil, errors.Join(errList...)
	}
	if n == 0 {
		return nil, &ValidationError{Fields: []FieldError{{Reason: file + ": no documents"}}}
	}
	return objs, nil
}

func isBlankYAML(doc string) bool {
	for line := range strings.Lines(doc) {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "#") && line != "..." {
			return false
		}
	}
	return true
}

// describeDoc names the document's object for error messages, as far as
// it can be read.
func describeDoc(doc []byte) string {
	var head struct {
		Kind any `json:"kind"`
		Name any `json:"name"`
	}
	if err := yaml.Unmarshal(doc, &head); err != nil {
		return ""
	}
	kind, _ := head.Kind.(string)
	name, _ := head.Name.(string)
	switch {
	case kind != "" && name != "":
		return fmt.Sprintf(" (%s %q)", kind, name)
	case kind != "":
		return " (" + kind + ")"
	}
	return ""
}

// listItems splits a document that is a list of objects (a JSON array, as
// -o json prints a list) into its items; any other document is one item.
func listItems(doc []byte) ([][]byte, error) {
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil || !bytes.HasPrefix(bytes.TrimSpace(js), []byte("[")) {
		return [][]byte{doc}, nil
	}
	var items []json.RawMessage
	if err := json.Unmarshal(js, &items); err != nil {
		return nil, &ValidationError{Fields: []FieldError{{Reason: fmt.Sprintf("malformed list: %v", err)}}}
	}
	if len(items) == 0 {
		return nil, &ValidationError{Fields: []FieldError{{Reason: "an empty list: nothing to apply"}}}
	}
	out := make([][]byte, len(items))
	for i, it := range items {
		out[i] = it
	}
	return out, nil
}

func parseDoc(doc []byte, namespace string) (Object, error) {
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return nil, &ValidationError{Fields: []FieldError{{Reason: fmt.Sprintf("malformed YAML: %v", err)}}}
	}
	if bytes.HasPrefix(bytes.TrimSpace(js), []byte("[")) || !bytes.HasPrefix(bytes.TrimSpace(js), []byte("{")) {
		return nil, &ValidationError{Fields: []FieldError{{Reason: "a document must be a mapping with kind: and name:"}}}
	}
	var head struct {
		Kind     any             `json:"kind"`
		Metadata json.RawMessage `json:"metadata"`
	}
	_ = json.Unmarshal(js, &head)
	var obj Object
	switch {
	case head.Metadata != nil:
		if obj, err = parseObjectDoc(js, head.Kind); err != nil {
			return nil, err
		}
	case head.Kind == string(KindService):
		var d serviceDoc
		if err := DecodeStrict(js, &d); err != nil {
			return nil, err
		}
		obj = &Service{Metadata: d.metadata(), Spec: d.ServiceSpec}
	case head.Kind == string(KindJob):
		var d jobDoc
		if err := DecodeStrict(js, &d); err != nil {
			return nil, err
		}
		obj = &Job{Metadata: d.metadata(), Spec: d.JobSpec}
	case head.Kind == string(KindCronJob):
		var d cronJobDoc
		if err := DecodeStrict(js, &d); err != nil {
			return nil, err
		}
		obj = &CronJob{Metadata: d.metadata(), Spec: d.CronJobSpec}
	case head.Kind == string(KindConfig) || head.Kind == string(KindSecret):
		var d dataDoc
		if err := DecodeStrict(js, &d); err != nil {
			return nil, err
		}
		if head.Kind == string(KindConfig) {
			if d.Type != "" {
				return nil, &ValidationError{Fields: []FieldError{{Field: "type", Reason: "configs have no type: only secrets do"}}}
			}
			obj = &Config{Metadata: d.metadata(), Data: d.data()}
		} else {
			obj = &Secret{Metadata: d.metadata(), Data: d.data(), Type: d.Type}
		}
	case head.Kind == nil:
		return nil, &ValidationError{Fields: []FieldError{{Field: "kind", Reason: "missing: use Service or Job"}}}
	default:
		return nil, &ValidationError{Fields: []FieldError{{Field: "kind", Reason: fmt.Sprintf("unknown kind %v: use Service, Job, CronJob, Config or Secret", head.Kind)}}}
	}
	if m := obj.GetMetadata(); m.Namespace == "" {
		m.Namespace = namespace
	}
	Default(obj)
	if err := obj.Validate(); err != nil {
		return nil, err
	}
	return obj, nil
}

// parseObjectDoc reads a document in the API's shape: kind next to the
// object's own fields. It keeps what a user may set (name, namespace,
// labels, spec) and drops the rest.
func parseObjectDoc(js []byte, kind any) (Object, error) {
	var obj Object
	switch kind {
	case string(KindService):
		obj = &Service{}
	case string(KindJob):
		obj = &Job{}
	case nil:
		return nil, &ValidationError{Fields: []FieldError{{Field: "kind", Reason: "missing: use Service or Job"}}}
	default:
		return nil, &ValidationError{Fields: []FieldError{{Field: "kind", Reason: fmt.Sprintf("unknown kind %v: only Service and Job apply from a file", kind)}}}
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(js, &fields); err != nil {
		return nil, &ValidationError{Fields: []FieldError{{Reason: fmt.Sprintf("malformed document: %v", err)}}}
	}
	delete(fields, "kind")
	rest, _ := json.Marshal(fields)
	if err := DecodeStrict(rest, obj); err != nil {
		return nil, err
	}
	m := obj.GetMetadata()
	if m.Kind != "" && string(m.Kind) != kind {
		return nil, &ValidationError{Fields: []FieldError{{Field: "metadata.kind", Reason: fmt.Sprintf("%q differs from kind %v", m.Kind, kind)}}}
	}
	*m = Metadata{Name: m.Name, Namespace: m.Namespace, Labels: m.Labels}
	switch x := obj.(type) {
	case *Service:
		x.Status = ServiceStatus{}
	case *Job:
		x.Status = JobStatus{}
	}
	return obj, nil
}

// MarshalSpec renders a Service or Job in the flat spec file shape, without
// status or server-set metadata.
func MarshalSpec(o Object) ([]byte, error) {
	m := o.GetMetadata()
	meta := docMeta{Kind: o.GetKind(), Name: m.Name, Labels: m.Labels}
	if m.Namespace != DefaultNamespace {
		meta.Namespace = m.Namespace
	}
	var v any
	switch x := o.(type) {
	case *Service:
		v = serviceDoc{meta, x.Spec}
	case *Job:
		v = jobDoc{meta, x.Spec}
	default:
		return nil, fmt.Errorf("%s: only services and jobs have a spec file shape", RefOf(o))
	}
	return yaml.Marshal(v)
}

// RunService is the service `berth run` makes: one replica of image
// running command. An empty name is derived from the image.
func RunService(name, image string, command []string) *Service {
	if name == "" {
		name = nameFromImage(image)
	}
	s := &Service{
		Metadata: Metadata{Name: name},
		Spec:     ServiceSpec{Replicas: 1, Template: Template{Image: image, Command: command}},
	}
	Default(s)
	return s
}

var nonLabel = lazyRegexp(`[^a-z0-9-]+`)

func nameFromImage(image string) string {
	base := image
	if i := strings.IndexByte(base, '@'); i >= 0 {
		base = base[:i]
	}
	if i := strings.LastIndexByte(base, '/'); i >= 0 {
		base = base[i+1:]
	}
	if i := strings.IndexByte(base, ':'); i >= 0 {
		base = base[:i]
	}
	base = strings.Trim(nonLabel().ReplaceAllString(strings.ToLower(base), "-"), "-")
	if len(base) > 63 {
		base = strings.Trim(base[:63], "-")
	}
	if base == "" {
		base = "run"
	}
	return base
}
