// Package api holds berth's wire types (Node, Service, Job, Instance,
// Event), their validation, the strict decoder shared by the API server
// and spec files, and the YAML spec file parser. The Go client lives in
// api/client.
//
// Every object has Metadata and, apart from Event, separate Spec and
// Status fields with separate writers: users and controllers write specs,
// the scheduler binds instances, agents write status.
package api

import (
	"fmt"
	"time"
)

// Kind names a type of object. On the wire and in etcd keys it is the
// lowercase plural ("services"); in spec files the singular ("Service").
type Kind string

// The kinds of object.
const (
	KindNode     Kind = "Node"
	KindService  Kind = "Service"
	KindJob      Kind = "Job"
	KindInstance Kind = "Instance"
	KindEvent    Kind = "Event"
	KindVolume   Kind = "Volume"
	KindConfig   Kind = "Config"
	KindSecret   Kind = "Secret"
	KindCronJob  Kind = "CronJob"
)

// Kinds lists every kind, in a stable order.
var Kinds = []Kind{KindNode, KindService, KindJob, KindInstance, KindEvent, KindVolume, KindConfig, KindSecret, KindCronJob}

// Plural is the kind's name in URLs and etcd keys.
func (k Kind) Plural() string {
	switch k {
	case KindNode:
		return "nodes"
	case KindService:
		return "services"
	case KindJob:
		return "jobs"
	case KindInstance:
		return "instances"
	case KindEvent:
		return "events"
	case KindVolume:
		return "volumes"
	case KindConfig:
		return "configs"
	case KindSecret:
		return "secrets"
	case KindCronJob:
		return "cronjobs"
	}
	return ""
}

// Namespaced reports whether objects of the kind live in a namespace.
// Nodes are cluster-wide.
func (k Kind) Namespaced() bool { return k != KindNode }

// HasStatus reports whether the kind has a Status written apart from its spec.
func (k Kind) HasStatus() bool {
	return k != KindEvent && k != KindVolume && k != KindConfig && k != KindSecret
}

// KindFromPlural returns the kind whose plural is p.
func KindFromPlural(p string) (Kind, bool) {
	for _, k := range Kinds {
		if k.Plural() == p {
			return k, true
		}
	}
	return "", false
}

// DefaultNamespace is the namespace of objects that name none.
const DefaultNamespace = "default"

// Metadata is what every object carries.
type Metadata struct {
	Kind      Kind   `json:"kind,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
	// UID tells apart two objects that had the same name at different times.
	UID string `json:"uid,omitempty"`
	// Revision is the etcd revision the object was last written at. An
	// update that names a revision fails with a conflict unless it is
	// still the current one.
	Revision  int64             `json:"revision,omitempty"`
	CreatedAt time.Time         `json:"createdAt,omitzero"`
	Labels    map[string]string `json:"labels,omitempty"`
}

// Object is implemented by pointers to every object type.
type Object interface {
	GetMetadata() *Metadata
	GetKind() Kind
	// Validate checks the object as a whole; errors are ValidationErrors.
	Validate() error
}

// New returns a new empty object of kind k.
func New(k Kind) (Object, error) {
	switch k {
	case KindNode:
		return &Node{}, nil
	case KindService:
		return &Service{}, nil
	case KindJob:
		return &Job{}, nil
	case KindInstance:
		return &Instance{}, nil
	case KindEvent:
		return &Event{}, nil
	case KindVolume:
		return &Volume{}, nil
	case KindConfig:
		return &Config{}, nil
	case KindSecret:
		return &Secret{}, nil
	case KindCronJob:
		return &CronJob{}, nil
	}
	return nil, fmt.Errorf("unknown kind %q", k)
}

// Ref names an object in messages: `service "web" in namespace "default"`.
func Ref(k Kind, namespace, name string) string {
	kind := k.Plural()
	if kind != "" {
		kind = kind[:len(kind)-1]
	} else {
		kind = string(k)
	}
	if !k.Namespaced() || namespace == "" {
		return fmt.Sprintf("%s %q", kind, name)
	}
	return fmt.Sprintf("%s %q in namespace %q", kind, name, namespace)
}

// RefOf is Ref for an object.
func RefOf(o Object) string {
	m := o.GetMetadata()
	return Ref(o.GetKind(), m.Namespace, m.Name)
}

// Default fills the namespace and kind of an object that leaves them out,
// and the defaults of the template of a service, job or cron job, so that
// a stored spec shows them.
func Default(o Object) {
	m := o.GetMetadata()
	m.Kind = o.GetKind()
	if o.GetKind().Namespaced() && m.Namespace == "" {
		m.Namespace = DefaultNamespace
	}
	if !o.GetKind().Namespaced() {
		m.Namespace = ""
	}
	switch x := o.(type) {
	case *Service:
		x.Spec.Template = x.Spec.Template.WithDefaults(KindService)
	case *Job:
		x.Spec.Template = x.Spec.Template.WithDefaults(KindJob)
	case *CronJob:
		x.Spec.Job.Template = x.Spec.Job.Template.WithDefaults(KindJob)
	case *Instance:
		// One sent without a template is told what its template lacks,
		// and is stored as one with the empty template always was.
		x.Spec.FillTemplate()
	}
}

func (n *Node) GetMetadata() *Metadata     { return &n.Metadata }
func (s *Service) GetMetadata() *Metadata  { return &s.Metadata }
func (j *Job) GetMetadata() *Metadata      { return &j.Metadata }
func (i *Instance) GetMetadata() *Metadata { return &i.Metadata }
func (e *Event) GetMetadata() *Metadata    { return &e.Metadata }
func (v *Volume) GetMetadata() *Metadata   { return &v.Metadata }
func (c *Config) GetMetadata() *Metadata   { return &c.Metadata }
func (s *Secret) GetMetadata() *Metadata   { return &s.Metadata }
func (c *CronJob) GetMetadata() *Metadata  { return &c.Metadata }

func (*Node) GetKind() Kind     { return KindNode }
func (*Service) GetKind() Kind  { return KindService }
func (*Job) GetKind() Kind      { return KindJob }
func (*Instance) GetKind() Kind { return KindInstance }
func (*Event) GetKind() Kind    { return KindEvent }
func (*Volume) GetKind() Kind   { return KindVolume }
func (*Config) GetKind() Kind   { return KindConfig }
func (*Secret) GetKind() Kind   { return KindSecret }
func (*CronJob) GetKind() Kind  { return KindCronJob }

var (
	_ Object = (*Node)(nil)
	_ Object = (*Service)(nil)
	_ Object = (*Job)(nil)
	_ Object = (*Instance)(nil)
	_ Object = (*Event)(nil)
	_ Object = (*Volume)(nil)
	_ Object = (*Config)(nil)
	_ Object = (*Secret)(nil)
	_ Object = (*CronJob)(nil)
)
