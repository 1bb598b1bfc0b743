// Command resp-goredis is a go-redis v9 workload that proves a RESP cluster loses nothing
// while it reshards: a ClusterClient (routes by the cluster's slot map) and a plain Client
// (one node; every key it does not own must be forwarded) run SET/GET/DEL/EXISTS,
// EXPIRE/TTL and MSET/MGET on hashtagged groups until a stop file appears.
//
// The checking rules are those of tests/resp/workload.py: each worker owns its keys, so a
// key's history is sequential; an acknowledged write sets the key's state; a timeout or a
// connection error is an op of unknown outcome whose states stay possible for good; every
// read, during the run and in a final pass through fresh clients, must return a possible
// state; any error reply is a violation. Exit status: 0 clean, 1 violations, 2 cannot run.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// ttl is far beyond the run, so no key expires while it is checked.
const ttl = 600 * time.Second

// missing is the value of a key that does not exist.
const missing = "<missing>" // no written value looks like this

type state struct {
	value  string
	hasTTL bool
}

// keyModel is what a key may hold; ghosts are states left by ops of unknown outcome.
type keyModel struct {
	states   map[state]bool
	ghosts   map[string]bool
	ghostTTL bool
	history  []string
}

func newKeyModel() *keyModel {
	return &keyModel{states: map[state]bool{{missing, false}: true}, ghosts: map[string]bool{}}
}

func (m *keyModel) values() map[string]bool {
	out := map[string]bool{}
	for s := range m.states {
		out[s.value] = true
	}
	for v := range m.ghosts {
		out[v] = true
	}
	return out
}

func (m *keyModel) clean() bool { return len(m.ghosts) == 0 && !m.ghostTTL }

func (m *keyModel) live() []state {
	var out []state
	for s := range m.states {
		if s.value != missing {
			out = append(out, state{s.value, true})
		}
	}
	return out
}

// write records a write's states: they replace the key's when acknowledged, and join
// them (for good) otherwise.
func (m *keyModel) write(outcome string, states ...state) {
	if outcome == "ok" {
		m.states = map[state]bool{}
	}
	for _, s := range states {
		m.states[s] = true
		if outcome != "ok" {
			m.ghosts[s.value] = true
		}
	}
}

func (m *keyModel) describe() string {
	var vals []string
	for v := range m.values() {
		vals = append(vals, v)
	}
	sort.Strings(vals)
	return fmt.Sprintf("possible %v; last ops %v", vals, m.history[max(0, len(m.history)-8):])
}

// checker holds the shared tallies and violations; each key model has one worker.
type checker struct {
	mu         sync.Mutex
	counts     map[string]map[string]int
	violations []string
	log        *os.File
}

func (c *checker) record(client, op string, keys []string, outcome string, detail string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.counts[client] == nil {
		c.counts[client] = map[string]int{}
	}
	c.counts[client][outcome]++
	if c.log != nil {
		fmt.Fprintf(c.log, "%.3f %s %s %v %s %q\n", float64(time.Now().UnixMilli())/1000, client, op, keys, outcome, detail)
	}
}

func (c *checker) violate(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.violations) < 1000 {
		c.violations = append(c.violations, fmt.Sprintf(format, args...))
	}
}

// classify says whether err is a reply (an error), no answer (unknown) or no error at all.
func classify(err error) string {
	var reply redis.Error
	switch {
	case err == nil || errors.Is(err, redis.Nil):
		return "ok"
	case errors.As(err, &reply):
		return "error"
	default: // timeouts, refused or reset connections, a closed pool
		return "unknown"
	}
}

type worker struct {
	label   string
	cluster bool
	client  redis.UniversalClient
	check   *checker
	rng     *rand.Rand
	seq     int
	keys    map[string]*keyModel
	single  []string
	groups  [][]string
}

func newWorker(label string, cluster bool, client redis.UniversalClient, check *checker, cfg *config, seed int64) *worker {
	w := &worker{label: label, cluster: cluster, client: client, check: check,
		rng: rand.New(rand.NewSource(seed)), keys: map[string]*keyModel{}}
	for i := 0; i < cfg.keys; i++ {
		key := fmt.Sprintf("%s:%s:k%d", cfg.prefix, label, i)
		w.keys[key] = newKeyModel()
		w.single = append(w.single, key)
	}
	for g := 0; g < cfg.groups; g++ {
		var group []string
		for j := 0; j < 4; j++ {
			group = append(group, fmt.Sprintf("%s:{%sg%d}:m%d", cfg.prefix, label, g, j))
		}
		w.groups = append(w.groups, group)
	}
	for _, group := range w.groups {
		for _, key := range group {
			w.keys[key] = newKeyModel()
		}
	}
	return w
}

func (w *worker) value() string {
	w.seq++
	return fmt.Sprintf("%s-%d", w.label, w.seq)
}

// done classifies an op's error, logs it, and reports an error reply as a violation.
func (w *worker) done(op string, keys []string, err error, result any) string {
	outcome := classify(err)
	detail := fmt.Sprint(result)
	if err != nil && outcome != "ok" {
		detail = err.Error()
	}
	w.check.record(w.label, op, keys, outcome, detail)
	for _, key := range keys {
		m := w.keys[key]
		m.history = append(m.history, fmt.Sprintf("%s=%s(%s)", op, outcome, detail))
	}
	if outcome == "error" {
		w.check.violate("%s: %s %v -> error reply %q; %s", w.label, op, keys, err, w.keys[keys[0]].describe())
	}
	return outcome
}

func (w *worker) checkRead(op, key, got string) {
	m := w.keys[key]
	if !m.values()[got] {
		w.check.violate("%s: %s %s returned %q; %s", w.label, op, key, got, m.describe())
	}
}

func (w *worker) step(ctx context.Context) {
	c := w.client
	key := w.single[w.rng.Intn(len(w.single))]
	m := w.keys[key]
	switch roll := w.rng.Float64(); {
	case roll < 0.30:
		v := w.value()
		err := c.Set(ctx, key, v, 0).Err()
		m.write(w.done("SET", []string{key}, err, v), state{v, false})
	case roll < 0.40:
		v := w.value()
		err := c.Set(ctx, key, v, ttl).Err()
		m.write(w.done("SET EX", []string{key}, err, v), state{v, true})
	case roll < 0.65:
		got, err := c.Get(ctx, key).Result()
		if errors.Is(err, redis.Nil) {
			got = missing
		}
		if w.done("GET", []string{key}, err, got) == "ok" {
			w.checkRead("GET", key, got)
		}
	case roll < 0.72:
		existed := len(m.live()) > 0
		clean := m.clean()
		n, err := c.Del(ctx, key).Result()
		outcome := w.done("DEL", []string{key}, err, n)
		// The ClusterClient retries after a network error, so only the plain count is exact.
		if outcome == "ok" && !w.cluster && clean && (n == 1) != existed {
			w.check.violate("%s: DEL %s -> %d, existed %v; %s", w.label, key, n, existed, m.describe())
		}
		m.write(outcome, state{missing, false})
	case roll < 0.77:
		n, err := c.Exists(ctx, key).Result()
		if w.done("EXISTS", []string{key}, err, n) == "ok" {
			vals := m.values()
			anyLive := false
			for v := range vals {
				anyLive = anyLive || v != missing
			}
			if (n == 1 && !anyLive) || (n == 0 && !vals[missing]) {
				w.check.violate("%s: EXISTS %s -> %d; %s", w.label, key, n, m.describe())
			}
		}
	case roll < 0.84:
		live := m.live()
		ok, err := c.Expire(ctx, key, ttl).Result()
		outcome := w.done("EXPIRE", []string{key}, err, ok)
		switch {
		case outcome == "ok" && m.clean() && ok != (len(live) > 0):
			w.check.violate("%s: EXPIRE %s -> %v; %s", w.label, key, ok, m.describe())
		case outcome == "ok" && m.clean():
			if ok {
				m.write("ok", live...)
			}
		default:
			m.ghostTTL = true
			for _, s := range live {
				m.states[s] = true
			}
		}
	case roll < 0.90:
		d, err := c.TTL(ctx, key).Result()
		if w.done("TTL", []string{key}, err, d) == "ok" && m.clean() {
			okay := false
			for s := range m.states {
				switch {
				case d == -2 && s.value == missing,
					d == -1 && s.value != missing && !s.hasTTL,
					d > 0 && d <= ttl && s.value != missing && s.hasTTL:
					okay = true
				}
			}
			if !okay {
				w.check.violate("%s: TTL %s -> %v; %s", w.label, key, d, m.describe())
			}
		}
	case roll < 0.95:
		group := w.groups[w.rng.Intn(len(w.groups))]
		pairs := []any{}
		values := map[string]string{}
		for _, k := range group {
			values[k] = w.value()
			pairs = append(pairs, k, values[k])
		}
		outcome := w.done("MSET", group, c.MSet(ctx, pairs...).Err(), "")
		for _, k := range group {
			w.keys[k].write(outcome, state{values[k], false})
		}
	default:
		group := w.groups[w.rng.Intn(len(w.groups))]
		got, err := c.MGet(ctx, group...).Result()
		if w.done("MGET", group, err, got) == "ok" {
			for i, k := range group {
				v, isString := got[i].(string)
				if got[i] == nil {
					v, isString = missing, true
				}
				if !isString {
					w.check.violate("%s: MGET %s -> %T %v", w.label, k, got[i], got[i])
					continue
				}
				w.checkRead("MGET", k, v)
			}
		}
	}
}

func (w *worker) run(cfg *config) {
	ctx := context.Background()
	interval := time.Duration(0)
	if cfg.rate > 0 {
		interval = time.Duration(float64(time.Second) / cfg.rate)
	}
	deadline := time.Now().Add(cfg.maxDuration)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(cfg.stopFile); err == nil {
			return
		}
		started := time.Now()
		w.step(ctx)
		time.Sleep(interval - time.Since(started))
	}
}

type config struct {
	plain, cluster, stopFile, readyFile, opsLog, prefix string
	separate                                            bool
	workers, keys, groups, minOK                        int
	rate                                                float64
	maxDuration                                         time.Duration
}

func clients(cfg *config) (func() redis.UniversalClient, func() redis.UniversalClient) {
	plain := func() redis.UniversalClient {
		// No retries: an op either answered or its outcome is unknown, and DEL counts are exact.
		return redis.NewClient(&redis.Options{Addr: cfg.plain, MaxRetries: -1,
			DialTimeout: 2 * time.Second, ReadTimeout: 5 * time.Second})
	}
	cluster := func() redis.UniversalClient {
		return redis.NewClusterClient(&redis.ClusterOptions{Addrs: strings.Split(cfg.cluster, ","),
			DialTimeout: 2 * time.Second, ReadTimeout: 5 * time.Second})
	}
	return plain, cluster
}

// finalPass reads every key through fresh clients of both kinds after the stop file (with
// separate keyspaces, each kind reads only its own workers' keys).
func finalPass(workers []*worker, makers map[string]func() redis.UniversalClient, check *checker, separate bool) int {
	ctx := context.Background()
	checked := 0
	for _, kind := range []string{"plain", "cluster"} {
		client := makers[kind]()
		for _, w := range workers {
			if separate && w.cluster != (kind == "cluster") {
				continue
			}
			for key, m := range w.keys {
				got, err := client.Get(ctx, key).Result()
				if errors.Is(err, redis.Nil) {
					got, err = missing, nil
				}
				if err != nil {
					check.violate("final %s: GET %s failed after the run: %v", kind, key, err)
					continue
				}
				checked++
				if !m.values()[got] {
					check.violate("final %s: %s = %q; %s", kind, key, got, m.describe())
				}
			}
		}
		_ = client.Close()
	}
	return checked
}

func main() {
	cfg := &config{}
	flag.StringVar(&cfg.plain, "plain", "", "HOST:PORT for the plain Client")
	flag.StringVar(&cfg.cluster, "cluster", "", "seed nodes HOST:PORT,... for the ClusterClient")
	flag.StringVar(&cfg.stopFile, "stop-file", "", "the workload stops when this file exists")
	flag.StringVar(&cfg.readyFile, "ready-file", "", "touched once every client has connected")
	flag.StringVar(&cfg.opsLog, "ops-log", "", "every op, one a line")
	flag.StringVar(&cfg.prefix, "prefix", "go", "key prefix")
	flag.IntVar(&cfg.workers, "workers", 2, "goroutines per client kind")
	flag.IntVar(&cfg.keys, "keys", 150, "single keys per worker")
	flag.IntVar(&cfg.groups, "groups", 10, "MSET/MGET groups per worker")
	flag.BoolVar(&cfg.separate, "separate-keyspaces", false, "-plain is not a node of -cluster (checking against real Redis)")
	flag.IntVar(&cfg.minOK, "min-ok", 200, "acknowledged ops each client kind needs")
	flag.Float64Var(&cfg.rate, "rate", 200, "ops/s per worker; 0 unpaced")
	flag.DurationVar(&cfg.maxDuration, "max-duration", 3*time.Minute, "stop even without the stop file")
	flag.Parse()
	if cfg.plain == "" || cfg.cluster == "" || cfg.stopFile == "" {
		fmt.Fprintln(os.Stderr, "resp-goredis: -plain, -cluster and -stop-file are required")
		os.Exit(2)
	}
	os.Exit(run(cfg))
}

// clientLog sends go-redis's own notes (a dial refused by a node that left, say) to the
// ops log, where they sit beside the ops they delayed, instead of the summary.
type clientLog struct{ check *checker }

func (l clientLog) Printf(_ context.Context, format string, v ...any) {
	l.check.mu.Lock()
	defer l.check.mu.Unlock()
	if l.check.log != nil {
		fmt.Fprintf(l.check.log, "go-redis: "+format+"\n", v...)
	}
}

func run(cfg *config) int {
	check := &checker{counts: map[string]map[string]int{}}
	if cfg.opsLog != "" {
		f, err := os.Create(cfg.opsLog)
		if err != nil {
			fmt.Fprintln(os.Stderr, "resp-goredis:", err)
			return 2
		}
		defer f.Close()
		check.log = f
		redis.SetLogger(clientLog{check})
	}
	makePlain, makeCluster := clients(cfg)
	makers := map[string]func() redis.UniversalClient{"plain": makePlain, "cluster": makeCluster}
	var workers []*worker
	for n, kind := range []string{"plain", "cluster"} {
		for i := 0; i < cfg.workers; i++ {
			client := makers[kind]()
			if err := client.Ping(context.Background()).Err(); err != nil {
				fmt.Fprintf(os.Stderr, "resp-goredis: cannot start the %s client: %v\n", kind, err)
				return 2
			}
			label := fmt.Sprintf("%s%d", kind, i)
			workers = append(workers, newWorker(label, kind == "cluster", client, check, cfg, int64(n*100+i)))
		}
	}
	if cfg.readyFile != "" {
		if err := os.WriteFile(cfg.readyFile, nil, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "resp-goredis:", err)
			return 2
		}
	}
	started := time.Now()
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Add(1)
		go func() { defer wg.Done(); w.run(cfg) }()
	}
	wg.Wait()
	elapsed := time.Since(started)
	for _, w := range workers {
		_ = w.client.Close()
	}
	checked := finalPass(workers, makers, check, cfg.separate)
	return report(workers, check, cfg, checked, elapsed)
}

func report(workers []*worker, check *checker, cfg *config, checked int, elapsed time.Duration) int {
	for _, kind := range []string{"plain", "cluster"} {
		ok := 0
		for client, tally := range check.counts {
			if strings.HasPrefix(client, kind) {
				ok += tally["ok"]
			}
		}
		if ok < cfg.minOK {
			check.violate("%s clients completed only %d ops (need %d)", kind, ok, cfg.minOK)
		}
	}
	var names []string
	for client := range check.counts {
		names = append(names, client)
	}
	sort.Strings(names)
	for _, client := range names {
		t := check.counts[client]
		fmt.Printf("go-redis %s: %d ok, %d unknown outcome, %d error replies\n", client, t["ok"], t["unknown"], t["error"])
	}
	keys := 0
	for _, w := range workers {
		keys += len(w.keys)
	}
	fmt.Printf("go-redis: %d keys, %d final reads, %.1fs, %d violations\n", keys, checked, elapsed.Seconds(), len(check.violations))
	for i, v := range check.violations {
		if i == 20 {
			break
		}
		fmt.Println("VIOLATION", v)
	}
	if len(check.violations) > 0 {
		return 1
	}
	return 0
}
