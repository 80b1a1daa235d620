package api

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"strings"
	"time"
)

// Config is named data that instances mount as files or read as env.
type Config struct {
	Metadata Metadata `json:"metadata"`
	// Data maps keys (file names) to their bytes (base64 on the wire).
	Data map[string][]byte `json:"data,omitempty"`
	// Digest identifies the data (server-set): a service with
	// rollOnChange rolls when the digest of data it uses changes.
	Digest string `json:"digest,omitempty"`
}

// Secret is a Config whose data is sealed at rest with the servers' seal
// key and never read back through the API: a get shows only its keys and
// their sizes. Nodes receive a secret only for the instances they run.
type Secret struct {
	Metadata Metadata `json:"metadata"`
	// Type is "" for data mounted as files or env, or
	// SecretTypeRegistryAuth for registry credentials templates name in
	// imagePullSecrets.
	Type string `json:"type,omitempty"`
	// Data is written by users and never returned.
	Data map[string][]byte `json:"data,omitempty"`
	// Keys lists the data's keys and their sizes (server-set).
	Keys map[string]int `json:"keys,omitempty"`
	// Sealed is the data as stored (server-set, never returned).
	Sealed string `json:"sealed,omitempty"`
	// Digest identifies the data (server-set) without revealing it: a
	// keyed hash.
	Digest string `json:"digest,omitempty"`
}

// MaxDataBytes bounds the data of one Config or Secret (keys and values
// together): it is one etcd value, sealed and encoded, under etcd's
// request limit of 1.5 MiB.
const MaxDataBytes = 1 << 20

// FileMount puts a Config's or Secret's value at Path in the container,
// read-only. Exactly one of Config and Secret is set; Key picks the value,
// and may be left out when the data holds one key only.
type FileMount struct {
	Config string `json:"config,omitempty"`
	Secret string `json:"secret,omitempty"`
	Key    string `json:"key,omitempty"`
	Path   string `json:"path"`
	// Mode is the file's permission bits: 0444 for configs and 0400 for
	// secrets when zero.
	Mode int `json:"mode,omitempty"`
}

// EnvFromSource sets a variable in the container for each key of a
// Config or Secret (exactly one of them set), the value its data.
type EnvFromSource struct {
	Config string `json:"config,omitempty"`
	Secret string `json:"secret,omitempty"`
}

// InstanceData is what an instance's files and envFrom resolve to: what
// its node needs to start it (GET .../instances/{name}/data).
type InstanceData struct {
	Files []FileData        `json:"files,omitempty"`
	Env   map[string]string `json:"env,omitempty"`
	// RegistryAuth merges the credentials of the template's
	// imagePullSecrets, the first secret naming a registry winning; only
	// while the cluster lets agents pull directly
	// (RegistrySettings.AgentsPullDirect).
	RegistryAuth *RegistryAuth `json:"registryAuth,omitempty"`
}

// FileData is one file of an instance's data.
type FileData struct {
	Path string `json:"path"`
	Mode int    `json:"mode"`
	Data []byte `json:"data"`
}

// FileMode is m's mode with the default filled in.
func (m FileMount) FileMode() int {
	switch {
	case m.Mode != 0:
		return m.Mode
	case m.Secret != "":
		return 0o400
	}
	return 0o444
}

// UsesData reports whether the template reads the config (kind Config)
// or secret (kind Secret) name.
func (t *Template) UsesData(kind Kind, name string) bool {
	pick := func(config, secret string) string {
		if kind == KindSecret {
			return secret
		}
		return config
	}
	for _, f := range t.Files {
		if pick(f.Config, f.Secret) == name {
			return true
		}
	}
	for _, e := range t.EnvFrom {
		if pick(e.Config, e.Secret) == name {
			return true
		}
	}
	return false
}

var dataKey = lazyRegexp(`^[-._a-zA-Z0-9]+$`)

func validateData(e *errs, data map[string][]byte) {
	total := 0
	for k, v := range data {
		total += len(k) + len(v)
		if !dataKey().MatchString(k) || k == "." || k == ".." || len(k) > 253 {
			e.add("data", "invalid key %q: letters, digits, '-', '_' and '.' only, at most 253", k)
		}
	}
	if total > MaxDataBytes {
		e.add("data", "%d bytes, over the limit of %d (1 MiB, MaxDataBytes)", total, MaxDataBytes)
	}
}

// Validate checks a config.
func (c *Config) Validate() error {
	var e errs
	validateMetadata(&e, &c.Metadata, true)
	validateData(&e, c.Data)
	return e.err()
}

// SecretTypeRegistryAuth is the type of a secret holding registry
// credentials, as Kubernetes' kubernetes.io/dockerconfigjson: one key,
// RegistryAuthKey, whose value is a docker config.json ("auths" by
// registry host, each with "auth": base64(user:password), or
// "username" and "password").
const SecretTypeRegistryAuth = "registry-auth"

// RegistryAuthKey is the one key of a registry-auth secret.
const RegistryAuthKey = ".dockerconfigjson"

// MaxRegistryAuthBytes bounds a registry-auth secret's data: its
// credentials travel with every pull that names it.
const MaxRegistryAuthBytes = 64 << 10

// MaxImagePullSecrets bounds a template's imagePullSecrets.
const MaxImagePullSecrets = 8

// RegistryAuth is the part of a docker config.json a registry-auth
// secret holds.
type RegistryAuth struct {
	Auths map[string]RegistryAuthEntry `json:"auths"`
}

// RegistryAuthEntry is one registry's credentials.
type RegistryAuthEntry struct {
	Auth          string `json:"auth,omitempty"` // base64("user:password")
	Username      string `json:"username,omitempty"`
	Password      string `json:"password,omitempty"`
	IdentityToken string `json:"identitytoken,omitempty"`
}

// ParseRegistryAuth reads a registry-auth secret's value, checking it.
func ParseRegistryAuth(b []byte) (*RegistryAuth, error) {
	var ra RegistryAuth
	if err := json.Unmarshal(b, &ra); err != nil {
		return nil, fmt.Errorf("not a docker config.json: %w", err)
	}
	if len(ra.Auths) == 0 {
		return nil, fmt.Errorf(`no "auths": want {"auths": {"HOST": {"auth": "base64(user:password)"}}}`)
	}
	for host, a := range ra.Auths {
		if host == "" || strings.ContainsAny(host, " \t\n") {
			return nil, fmt.Errorf("auths: invalid registry %q", host)
		}
		if a.Auth == "" && a.Username == "" && a.IdentityToken == "" {
			return nil, fmt.Errorf("auths[%q]: no credentials: set auth, username and password, or identitytoken", host)
		}
		if a.Auth != "" {
			raw, err := base64.StdEncoding.DecodeString(a.Auth)
			if err != nil || !strings.Contains(string(raw), ":") {
				return nil, fmt.Errorf("auths[%q].auth: want base64(user:password)", host)
			}
		}
	}
	return &ra, nil
}

// Validate checks a secret.
func (s *Secret) Validate() error {
	var e errs
	validateMetadata(&e, &s.Metadata, true)
	validateData(&e, s.Data)
	switch s.Type {
	case "":
	case SecretTypeRegistryAuth:
		// Data is nil on what the store gives back (sealed): only what a
		// user writes is checked.
		if s.Data == nil && s.Sealed != "" {
			break
		}
		v, ok := s.Data[RegistryAuthKey]
		switch {
		case !ok || len(s.Data) != 1:
			e.add("data", "a %s secret holds one key, %q", SecretTypeRegistryAuth, RegistryAuthKey)
		case len(v) > MaxRegistryAuthBytes:
			e.add("data", "%d bytes, over the limit of %d for a %s secret (MaxRegistryAuthBytes)", len(v), MaxRegistryAuthBytes, SecretTypeRegistryAuth)
		default:
			if _, err := ParseRegistryAuth(v); err != nil {
				e.add("data."+RegistryAuthKey, "%v", err)
			}
		}
	default:
		e.add("type", "must be empty or %q, got %q", SecretTypeRegistryAuth, s.Type)
	}
	return e.err()
}

func validateFiles(e *errs, prefix string, t *Template) {
	paths := map[string]int{}
	for _, v := range t.Volumes {
		paths[path.Clean(v.Path)] = -1
	}
	for i, f := range t.Files {
		fp := fmt.Sprintf("%s[%d]", join(prefix, "files"), i)
		switch {
		case (f.Config == "") == (f.Secret == ""):
			e.add(fp, "set exactly one of config and secret")
		case f.Config != "":
			if err := ValidateName(f.Config); err != nil {
				e.add(fp+".config", "%v", err)
			}
		default:
			if err := ValidateName(f.Secret); err != nil {
				e.add(fp+".secret", "%v", err)
			}
		}
		if f.Key != "" && !dataKey().MatchString(f.Key) {
			e.add(fp+".key", "invalid key %q", f.Key)
		}
		if f.Mode < 0 || f.Mode > 0o777 {
			e.add(fp+".mode", "must be permission bits 0 to 0777, got %#o", f.Mode)
		}
		if !path.IsAbs(f.Path) || path.Clean(f.Path) == "/" || strings.Contains(f.Path, "\x00") {
			e.add(fp+".path", "must be an absolute path other than /, got %q", f.Path)
		} else if _, dup := paths[path.Clean(f.Path)]; dup {
			e.add(fp+".path", "%s is mounted twice", f.Path)
		} else {
			paths[path.Clean(f.Path)] = i
		}
	}
	if n := len(t.ImagePullSecrets); n > MaxImagePullSecrets {
		e.add(join(prefix, "imagePullSecrets"), "%d secrets, over the limit of %d (MaxImagePullSecrets)", n, MaxImagePullSecrets)
	}
	for i, name := range t.ImagePullSecrets {
		if err := ValidateName(name); err != nil {
			e.add(fmt.Sprintf("%s[%d]", join(prefix, "imagePullSecrets"), i), "%v", err)
		}
	}
	for i, s := range t.EnvFrom {
		ep := fmt.Sprintf("%s[%d]", join(prefix, "envFrom"), i)
		if (s.Config == "") == (s.Secret == "") {
			e.add(ep, "set exactly one of config and secret")
			continue
		}
		if err := ValidateName(s.Config + s.Secret); err != nil {
			e.add(ep, "%v", err)
		}
	}
}

// ConfigDigest identifies a config's data.
func ConfigDigest(data map[string][]byte) string {
	sum := sha256.Sum256(EncodeData(data))
	return hex.EncodeToString(sum[:12])
}

// EncodeData is data in a compact, canonical form: for each key in
// order, its length, the key, the value's length and the value.
func EncodeData(data map[string][]byte) []byte {
	keys := make([]string, 0, len(data))
	n := 0
	for k, v := range data {
		keys = append(keys, k)
		n += len(k) + len(v) + 2*binary.MaxVarintLen64
	}
	slices.Sort(keys)
	b := make([]byte, 0, n)
	for _, k := range keys {
		b = binary.AppendUvarint(b, uint64(len(k)))
		b = append(b, k...)
		b = binary.AppendUvarint(b, uint64(len(data[k])))
		b = append(b, data[k]...)
	}
	return b
}

// DecodeData reads what EncodeData wrote.
func DecodeData(b []byte) (map[string][]byte, error) {
	data := map[string][]byte{}
	next := func() ([]byte, error) {
		n, w := binary.Uvarint(b)
		if w <= 0 || uint64(len(b)-w) < n {
			return nil, fmt.Errorf("data: truncated")
		}
		v := b[w : w+int(n)]
		b = b[w+int(n):]
		return v, nil
	}
	for len(b) > 0 {
		k, err := next()
		if err != nil {
			return nil, err
		}
		v, err := next()
		if err != nil {
			return nil, err
		}
		data[string(k)] = v
	}
	return data, nil
}

// DataRefs lists the configs and secrets t reads, each once, in order.
func (t *Template) DataRefs() []ObjectRef {
	seen := map[ObjectRef]bool{}
	var out []ObjectRef
	add := func(config, secret string) {
		r := ObjectRef{Kind: KindConfig, Name: config}
		if secret != "" {
			r = ObjectRef{Kind: KindSecret, Name: secret}
		}
		if !seen[r] {
			seen[r] = true
			out = append(out, r)
		}
	}
	for _, f := range t.Files {
		add(f.Config, f.Secret)
	}
	for _, e := range t.EnvFrom {
		add(e.Config, e.Secret)
	}
	slices.SortFunc(out, func(a, b ObjectRef) int { return strings.Compare(string(a.Kind)+"/"+a.Name, string(b.Kind)+"/"+b.Name) })
	return out
}

// DataDigest combines the digests of the configs and secrets t reads
// (digest gives one's, "" when it is missing) into one; "" when t reads
// none.
func (t *Template) DataDigest(digest func(ObjectRef) string) string {
	refs := t.DataRefs()
	if len(refs) == 0 {
		return ""
	}
	h := sha256.New()
	for _, r := range refs {
		fmt.Fprintf(h, "%s/%s=%s\n", r.Kind, r.Name, digest(r))
	}
	return hex.EncodeToString(h.Sum(nil)[:12])
}

// RollForData brings s up to the data its template uses, whose digest
// is now digest (Template.DataDigest): with RollOnChange, a digest other
// than the one recorded is recorded and the template restarted at now (a
// rollout), in the one write the caller makes, so a roll happens once
// per change however often, and by whom, this is called. A service
// without a recorded digest (or whose template reads no data any more)
// only records it. It reports whether s changed.
func (s *ServiceSpec) RollForData(digest string, now time.Time) bool {
	if !s.RollOnChange || s.DataDigest == digest {
		return false
	}
	if s.DataDigest != "" && digest != "" {
		s.Template.RestartedAt = now
	}
	s.DataDigest = digest
	return true
}
