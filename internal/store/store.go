// Package store keeps berth's typed objects in etcd.
//
// Keys are /berth/<plural kind>/<namespace>/<name> (nodes, being
// cluster-wide, /berth/nodes/<name>); values are the objects' JSON
// without their revision, which is the key's etcd mod revision and is
// filled in on every read. An instance bound to a node also has a key
// under /berth/assign/<node>/<namespace>/<instance>, written in the same
// etcd transaction as the instance, so the two share a revision and an
// agent watches only its own prefix (assignvalue.go).
//
// Writes that name a revision (expectRevision != 0) fail with
// errdefs.ErrConflict unless it is still the object's revision. Update
// writes metadata labels and spec but keeps the stored status;
// UpdateStatus writes status and keeps the rest: the two have separate
// writers and neither clobbers the other. Likewise an instance's node and
// CPU set are written by Bind alone.
//
// A handle made by Fenced also requires comparisons of its own (a
// leader's term) in every transactional write, so that a leader that lost
// its term writes nothing more (fence.go).
package store

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
)

// Config says where the store keeps its data.
type Config struct {
	// DataDir holds the embedded etcd's data (DataDir/etcd). Unused with
	// EtcdEndpoints.
	DataDir string
	// EtcdEndpoints, when set, use an external etcd cluster instead of an
	// embedded one.
	EtcdEndpoints []string
	// EtcdTLS is the client TLS configuration for EtcdEndpoints.
	EtcdTLS *tls.Config
	// Member, when set, makes the embedded etcd one member of a cluster
	// of servers (see cluster.go). Unused with EtcdEndpoints.
	Member *Member
	// Prefix of every key; "/berth" when empty. Tests sharing an etcd use
	// their own.
	Prefix string
	// EventTTL is how long events are kept; one hour when zero.
	EventTTL time.Duration
	// MaxEvents bounds how many events are kept, oldest dropped first;
	// 1000 when zero. Each kind of audit event (RecordAuditEvent) has as
	// many of its own.
	MaxEvents int
	// Logger gets the store's own messages; etcd's are dropped unless they
	// are errors.
	Logger *slog.Logger
	// MinLeaseTTL, when set, is the shortest lease an embedded etcd
	// without peers must grant as asked (a node heartbeat TTL shorter than
	// api.NodeTTL): its raft ticks are made as fine as that needs. Its
	// slow ticks grant no lease under loneMinLease otherwise.
	MinLeaseTTL time.Duration
	// CompactionRetention is the history an embedded member keeps, older
	// revisions compacted away; five minutes when zero (maintain.go).
	CompactionRetention time.Duration
	// CompactionBudget bounds that history by what it weighs: once more
	// than the larger of this and twice the live data's estimated size was
	// written since the last compaction, the history is compacted to
	// about that much, before the retention has passed. In bytes of keys
	// and values written; a quarter of the embedded quota (2 GiB) when zero.
	CompactionBudget int64
	// compactInterval is how often the history is sampled and compacted:
	// a tenth of CompactionRetention when zero (tests set it).
	compactInterval time.Duration
	// deletedFloor is the fewest deleted keys that compact early (tests).
	deletedFloor int64
	// dbPagesInterval is how often the database's mapped pages are
	// looked at (releaseDBPagesEvery); dbPagesInterval when zero.
	dbPagesInterval time.Duration
	// DefragInterval is how often an embedded member's free space is
	// looked at, one minute when zero; its database is defragmented once
	// more than DefragMinFree (64 MiB when zero) and more than the pages
	// in use are free.
	DefragInterval time.Duration
	DefragMinFree  int64
}

// Store is a handle on the objects in etcd. It is safe for concurrent use.
type Store struct {
	// conn is shared with the handles Fenced makes.
	*conn
	// fence is compared in every transactional write (see Fenced).
	fence []clientv3.Cmp
	// maxOps bounds the writes of one transaction: etcd's limit on the
	// operations of a request, less the fence's comparisons.
	maxOps int
}

// conn is what every handle on one store shares: the client, the
// embedded etcd, and the state that must not be copied.
type conn struct {
	client *clientv3.Client
	etcd   *embed.Etcd // nil with an external cluster
	// watchConn carries the embedded member's watches (see Open); nil
	// with an external cluster, whose client does it all.
	watchConn *clientv3.Client
	lock      *os.File // held while the embedded etcd runs
	// stopMaintain ends the embedded member's maintenance (compactions
	// and defragmentations), and maintained is closed once it has.
	stopMaintain context.CancelFunc
	maintained   chan struct{}
	hist         historyStats
	prefix       string
	eventTTL     time.Duration
	maxEvent     int
	log          *slog.Logger

	eventCount atomic.Int64 // events recorded, to prune every pruneEvery
	// lastWrite is the revision of this handle's latest object or
	// heartbeat write: a reader fed by a watch has seen everything this
	// process wrote once it has seen that revision.
	lastWrite atomic.Int64

	// bulk holds back many-object transactions while others are in
	// flight (see bulkBudget).
	bulk *bulkLane

	// writing and laneWriting count the write transactions sent to etcd
	// and not yet answered, all and the lane's: what a write sent now
	// queues behind (Timing.Ahead).
	writing, laneWriting atomic.Int32

	// live is this store's side of the nodes' heartbeats (see lease.go).
	live liveness

	// hub serves the nodes' assignment watches (see assignhub.go).
	hub assignHub

	leaseMu      sync.Mutex
	eventLease   clientv3.LeaseID
	eventLeaseTo time.Time
}

// Open starts an embedded etcd under cfg.DataDir, or connects to
// cfg.EtcdEndpoints, and returns a Store on it.
// Long because each Config field gets its default here, in one place.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	s := &Store{conn: &conn{
		prefix:   strings.TrimSuffix(cfg.Prefix, "/"),
		eventTTL: cfg.EventTTL,
		maxEvent: cfg.MaxEvents,
		log:      cfg.Logger,
		bulk:     newBulkLane(bulkBudget),
	}}
	if s.prefix == "" {
		s.prefix = "/berth"
	}
	if s.eventTTL <= 0 {
		s.eventTTL = time.Hour
	}
	if s.maxEvent <= 0 {
		s.maxEvent = 1000
	}
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if len(cfg.EtcdEndpoints) > 0 {
		c, err := clientv3.New(clientv3.Config{
			Endpoints:   cfg.EtcdEndpoints,
			TLS:         cfg.EtcdTLS,
			DialTimeout: 5 * time.Second,
			Context:     ctx,
			Logger:      zap.NewNop(),
		})
		if err != nil {
			return nil, fmt.Errorf("etcd %v: %w", cfg.EtcdEndpoints, err)
		}
		// Fail now, not on first use, when the cluster is unreachable.
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if _, err := c.Get(sctx, s.prefix+"/", clientv3.WithCountOnly()); err != nil {
			c.Close()
			return nil, fmt.Errorf("etcd %v: %w: %w", cfg.EtcdEndpoints, errdefs.ErrUnavailable, err)
		}
		s.client = c
		s.maxOps = 128 // etcd's default --max-txn-ops
		return s, nil
	}
	if cfg.DataDir == "" {
		return nil, fmt.Errorf("store: %w: DataDir or EtcdEndpoints is required", errdefs.ErrInvalidArgument)
	}
	lock, err := lockDir(filepath.Join(cfg.DataDir, "etcd"))
	if err != nil {
		return nil, err
	}
	e, err := startEmbedded(ctx, cfg.DataDir, cfg.Member, cfg.MinLeaseTTL)
	if err != nil {
		lock.Close()
		return nil, err
	}
	s.etcd, s.lock = e, lock
	s.client = v3client.New(e.Server)
	// Watches go over gRPC on the member's unix socket; reads, writes and
	// leases stay in-process. The in-process watch stream is Go channels
	// with no flow control: under a storm of watches opened and cancelled
	// (a thousand agents' watches restarting) its client and server loops
	// each wait to send to the other, and every watch of the process
	// stops for good (etcd-io/etcd#20716, #18879). Over gRPC, HTTP/2 flow
	// control keeps them apart.
	wc, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{"unix://" + filepath.Join(cfg.DataDir, "etcd", clientSocket)},
		DialTimeout: 5 * time.Second,
		// It lives as long as the store, not as Open's ctx.
		Context: context.WithoutCancel(ctx),
		Logger:  zap.NewNop(),
	})
	if err != nil {
		s.client.Close()
		e.Close()
		lock.Close()
		return nil, fmt.Errorf("embedded etcd's watch client: %w", err)
	}
	s.watchConn = wc
	s.client.Watcher = clientv3.NewWatcher(wc)
	s.maxOps = embeddedMaxTxnOps
	mctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	s.stopMaintain, s.maintained = stop, make(chan struct{})
	retention := cmp.Or(cfg.CompactionRetention, compactionRetention)
	var wg sync.WaitGroup
	wg.Go(func() {
		s.compactHistory(mctx, cmp.Or(cfg.compactInterval, retention/10), retention, cmp.Or(cfg.CompactionBudget, compactionBudget), cmp.Or(cfg.deletedFloor, deletedFloor))
	})
	wg.Go(func() {
		s.maintain(mctx, cmp.Or(cfg.DefragInterval, defragInterval), cmp.Or(cfg.DefragMinFree, defragMinFree))
	})
	wg.Go(func() { s.releaseDBPagesEvery(mctx, cmp.Or(cfg.dbPagesInterval, dbPagesInterval), dbPagesMinMapped) })
	go func() {
		wg.Wait()
		close(s.maintained)
	}()
	return s, nil
}

// clientSocket is the embedded member's client listener, in its data dir.
const clientSocket = "client.sock"

const embeddedMaxTxnOps = 1024

// quotaBackendBytes is the embedded member's database quota.
const quotaBackendBytes = 8 << 30

// loneTickMs is the raft tick of a member without peers. Its election
// timeout is five ticks, and etcd grants no lease under 1.5 of those,
// seven ticks: loneMinLease, under the node heartbeat TTL (api.NodeTTL).
const (
	loneTickMs   = 1000
	loneMinLease = 7 * loneTickMs * time.Millisecond
)

// loneTick is the raft tick of a member without peers that must grant
// leases as short as minLease (none when zero).
func loneTick(minLease time.Duration) uint {
	if minLease <= 0 || minLease >= loneMinLease {
		return loneTickMs
	}
	return uint(max(minLease/7, 10*time.Millisecond).Milliseconds())
}

// catchUpEntries and loneCatchUpEntries are the raft entries an embedded
// member keeps in memory for its followers (see startEmbedded). A member
// alone has no follower: it keeps the least etcd takes. etcd compacts its
// log at a snapshot in memory every 100 applied entries, so a lone member
// holds up to 101 entries rather than 200, each a transaction of up to
// MaxTxnBytes (a batch of new instances, or of a node's status reports).
const (
	catchUpEntries     = 1000
	loneCatchUpEntries = 1
)

// startEmbedded starts this server's etcd member in dataDir/etcd.
// Long because it is etcd's configuration, each setting with its reason.
func startEmbedded(ctx context.Context, dataDir string, member *Member, minLease time.Duration) (*embed.Etcd, error) {
	dir := filepath.Join(dataDir, "etcd")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("etcd data dir %s: %w", dir, err)
	}
	ec := embed.NewConfig()
	ec.Name = "berth"
	ec.Dir = dir
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	ec.EnableGRPCGateway = false
	ec.MaxTxnOps = embeddedMaxTxnOps
	// No auto-compaction: the store compacts, by time and by size
	// (compactHistory).
	// etcd's default quota, 2 GiB, is reached by 300,000 instances
	// scaled down and up within the compaction window: past it etcd raises its NOSPACE alarm
	// and takes no write until an operator defragments and disarms it.
	// 8 GiB is the most etcd advises.
	ec.QuotaBackendBytes = quotaBackendBytes
	// etcd keeps this many applied raft entries in memory for a follower
	// that falls behind, 5,000 by default: whole transactions, each a
	// batch of up to MaxTxnBytes (a node's status reports, a service's
	// new instances), which held tens of megabytes at 20,000 instances
	// and grows with them. A follower further behind gets a snapshot; a
	// lone member has none.
	ec.SnapshotCatchUpEntries = catchUpEntries
	if member == nil {
		ec.SnapshotCatchUpEntries = loneCatchUpEntries
	}
	// The store talks to the embedded server in-process; the listeners
	// only have to exist. Unix sockets in the root-only etcd dir keep
	// them off the network: a member alone has no peers to meet, and a
	// TCP peer port would answer anyone on the machine in the clear
	// (a member of several listens where Member says, over TLS).
	sock := filepath.Join(dir, clientSocket)
	_ = os.Remove(sock)
	cu, _ := url.Parse("unix://" + sock)
	psock := filepath.Join(dir, "peer.sock")
	_ = os.Remove(psock)
	pu, _ := url.Parse("unix://" + psock)
	ec.ListenClientUrls, ec.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	ec.ListenPeerUrls, ec.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	ec.InitialCluster = ec.InitialClusterFromName(ec.Name)
	readyTimeout := 60 * time.Second
	if member != nil {
		ec.TickMs, ec.ElectionMs = 100, 1000 // etcd's defaults: peers heartbeat and elect
		if err := member.configure(ec); err != nil {
			return nil, err
		}
		readyTimeout = memberReadyTimeout
	} else {
		// A lone member has no peers to heartbeat or elect with: its raft
		// ticks, its database's batch commits and its downgrade checks are
		// timers that wake an idle node for nothing it needs. Slower ones
		// cost nothing: every write is still in the fsynced WAL before it
		// is acknowledged, the backend commits what the WAL already holds,
		// and the shortest lease stays under any heartbeat TTL berth
		// grants. Its first election does not wait for the ticks
		// (campaignAlone).
		tick := loneTick(minLease)
		ec.TickMs, ec.ElectionMs = tick, 5*tick
		ec.BackendBatchInterval = 5 * time.Second
		ec.DowngradeCheckTime = 0 // none: berth never downgrades its etcd
	}
	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("embedded etcd in %s: %w", dir, err)
	}
	if member == nil {
		go campaignAlone(e)
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, nil
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd in %s: %w", dir, err)
	case <-ctx.Done():
		e.Close()
		return nil, fmt.Errorf("embedded etcd in %s: %w", dir, ctx.Err())
	case <-time.After(readyTimeout):
		e.Close()
		return nil, fmt.Errorf("embedded etcd in %s: not ready after %v: %w", dir, readyTimeout, errdefs.ErrUnavailable)
	}
}

// campaignAlone makes a member without peers its own leader at once
// instead of after its election timeout: the ticks etcd fast-forwards at
// start leave one to five ticks to wait (0.8 s on average at a 250 ms
// tick, 3 s at a lone member's). The message is the one a leader handing
// over sends its successor: it starts an election with no pre-vote, which
// a member alone wins outright. It is sent again until a leader is known,
// as the member ignores it while its initial configuration is not
// applied yet; never to a member of several.
func campaignAlone(e *embed.Etcd) {
	id := uint64(e.Server.MemberID())
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for e.Server.Leader() == 0 && len(e.Server.Cluster().Members()) == 1 {
		m := &raftpb.Message{Type: raftpb.MsgTimeoutNow.Enum(), To: &id, From: &id}
		if err := e.Server.Process(context.Background(), m); err != nil {
			return
		}
		select {
		case <-t.C:
		case <-e.Server.StoppingNotify():
			return
		}
	}
}

// lockDir takes an exclusive lock on dir, so that a second server on the
// same data dir fails at once instead of waiting forever on etcd's own
// database lock.
func lockDir(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("etcd data dir %s: %w", dir, err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "berth.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("etcd data dir %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("etcd data dir %s: %w: in use by another process", dir, errdefs.ErrFailedPrecondition)
		}
		return nil, fmt.Errorf("etcd data dir %s: lock: %w", dir, err)
	}
	return f, nil
}

// Close releases the client and stops the embedded etcd, if any. The
// handles Fenced made from s share them: close only the one Open returned.
func (s *Store) Close() error {
	s.live.stopLiveness()
	s.hub.stop()
	if s.stopMaintain != nil {
		s.stopMaintain()
		<-s.maintained
	}
	err := s.client.Close()
	if s.watchConn != nil {
		s.watchConn.Close()
	}
	if s.etcd != nil {
		s.etcd.Close()
		s.lock.Close()
	}
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// Client is the underlying etcd client, for leader election and the like.
func (s *Store) Client() *clientv3.Client { return s.client }

// LastWrite is the revision of the latest object or heartbeat write made
// through this Store or a handle Fenced made from it (0 before any).
func (s *Store) LastWrite() int64 { return s.lastWrite.Load() }

func (s *Store) noteWrite(rev int64) {
	for {
		cur := s.lastWrite.Load()
		if rev <= cur || s.lastWrite.CompareAndSwap(cur, rev) {
			return
		}
	}
}

// Revision is the store's current revision.
func (s *Store) Revision(ctx context.Context) (int64, error) {
	r, err := s.client.Get(ctx, s.prefix+"/", clientv3.WithCountOnly())
	if err != nil {
		return 0, fmt.Errorf("store revision: %w", wrapEtcd(err))
	}
	return r.Header.Revision, nil
}

// Key is the etcd key of an object.
func (s *Store) Key(kind api.Kind, namespace, name string) string {
	if !kind.Namespaced() {
		return s.prefix + "/" + kind.Plural() + "/" + name
	}
	return s.prefix + "/" + kind.Plural() + "/" + namespace + "/" + name
}

// prefixOf is the key prefix of kind's objects in namespace, or in every
// namespace when namespace is empty.
func (s *Store) prefixOf(kind api.Kind, namespace string) string {
	p := s.prefix + "/" + kind.Plural() + "/"
	if kind.Namespaced() && namespace != "" {
		p += namespace + "/"
	}
	return p
}

func (s *Store) assignKey(node, namespace, name string) string {
	return s.prefix + "/assign/" + node + "/" + namespace + "/" + name
}

func (s *Store) assignPrefix(node string) string { return s.prefix + "/assign/" + node + "/" }

// wrapEtcd puts errors of an unreachable etcd in the Unavailable category.
func wrapEtcd(err error) error {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("%w: %w", errdefs.ErrUnavailable, err)
}

// Decode fills obj from a value as stored, modified at revision rev, but
// leaves an instance's template nil where the value has none or null:
// the controller's cache puts the one it shares there (and decoding an
// empty one first would be for nothing).
func Decode(obj api.Object, value []byte, rev int64) error { return decodeValue(obj, value, rev) }

// decode fills obj from a stored value at a revision. An instance whose
// value has no template gets the empty one, as when it held its template
// by value: none stored was without one, but what reads it is never
// given a nil one.
func decode(obj api.Object, value []byte, rev int64) error {
	if err := decodeValue(obj, value, rev); err != nil {
		return err
	}
	if in, ok := obj.(*api.Instance); ok {
		in.Spec.FillTemplate()
	}
	return nil
}

func decodeValue(obj api.Object, value []byte, rev int64) error {
	reflect.ValueOf(obj).Elem().SetZero()
	if err := json.Unmarshal(value, obj); err != nil {
		return fmt.Errorf("stored %s: %w", obj.GetKind(), err)
	}
	obj.GetMetadata().Revision = rev
	obj.GetMetadata().Kind = obj.GetKind()
	return nil
}

// Wire is a stored value of kind, modified at revision rev, as the API
// gives the object: its JSON with its kind and revision in its metadata.
// It splices them into the stored JSON (which encode starts with the
// metadata, and writes without the revision) rather than decoding and
// encoding the whole object, which for every event of every watch was
// most of what a busy server spent on JSON. A value of another shape
// goes the long way.
func Wire(kind api.Kind, value []byte, rev int64) ([]byte, error) {
	const open = `{"metadata":{`
	rest, ok := bytes.CutPrefix(value, []byte(open))
	if !ok || len(rest) == 0 || rest[0] != '"' {
		obj, err := api.New(kind)
		if err != nil {
			return nil, err
		}
		if err := decode(obj, value, rev); err != nil {
			return nil, err
		}
		return json.Marshal(obj)
	}
	out := make([]byte, 0, len(value)+len(kind)+40)
	out = append(out, open...)
	if !bytes.HasPrefix(rest, []byte(`"kind":`)) {
		out = append(out, `"kind":"`...)
		out = append(out, kind...)
		out = append(out, `",`...)
	}
	out = append(out, `"revision":`...)
	out = strconv.AppendInt(out, rev, 10)
	out = append(out, ',')
	return append(out, rest...), nil
}

// encode renders obj for storage: without its revision, which etcd
// keeps, nor its kind, which its key says: every reader of a stored value
// (decode, Wire) gives the kind again, as they always have, and
// "kind":"Instance" was 18 bytes of each revision of every instance that
// etcd keeps until a compaction.
func encode(obj api.Object) ([]byte, error) {
	m := obj.GetMetadata()
	rev, kind := m.Revision, m.Kind
	m.Revision, m.Kind = 0, ""
	b, err := json.Marshal(obj)
	m.Revision, m.Kind = rev, kind
	return b, err
}

func newUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// prepare defaults and checks an object about to be written.
func prepare(obj api.Object) error {
	api.Default(obj)
	if err := obj.Validate(); err != nil {
		return fmt.Errorf("%s: %w", api.RefOf(obj), err)
	}
	return nil
}
