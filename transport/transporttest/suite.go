// Package transporttest checks that a transport keeps the contract that
// package transport states. A transport's own tests call Run with a
// Factory that opens fresh hubs on it:
//
//	func TestContract(t *testing.T) {
//		transporttest.Run(t, func(t *testing.T, limits transport.Limits, sink transport.Sink) transporttest.Hub {
//			tr := new(Transport)
//			if err := tr.Open(uniqueName(t), limits, sink); err != nil {
//				t.Fatal(err)
//			}
//			t.Cleanup(func() { _ = tr.Close() })
//			return transporttest.Hub{Transport: tr}
//		})
//	}
//
// The suite uses only the Transport interface, so that every transport is
// held to the same rules (and transport.PatternTransport, whose cases
// run only for a transport that implements it), plus the optional hooks
// of Hub: a clock the
// suite can drive, housekeeping it can run at once, and further nodes of
// a shared hub. It watches every topic whose deliveries it checks (a
// transport may skip unwatched topics) and waits for deliveries, so that
// a transport may deliver from another goroutine; but a receipt must
// carry what the publishing node's sink returned for its event. A healthy
// hub has no reason to interrupt streams: a call of Sink.Interrupt fails
// the subtest. On real time, the age subtests take a few seconds.
package transporttest

import (
	"testing"
	"time"

	"github.com/ssehub/caddy-sse/transport"
)

// Patience is how long the suite waits for something that should happen
// at once (a delivery, a goroutine's end) before it fails: a safety net,
// never a way to synchronise.
const Patience = 10 * time.Second

// Factory opens a transport for a fresh hub with limits and sink: a hub
// that no other hub of the test run shares (a unique name, key prefix or
// both), empty, whose first event gets Seq 1. It arranges with t.Cleanup
// to close the transport (and any node opened with Hub.Join) and to
// remove whatever it stored outside the process. It fails t when it
// cannot open the hub.
type Factory func(t *testing.T, limits transport.Limits, sink transport.Sink) Hub

// Hub is a fresh hub as a Factory opened it: its first node, and what the
// suite may do with it beyond the Transport interface. The optional
// fields are nil when the transport does not offer them; the suite then
// skips, or tests otherwise, what needs them.
type Hub struct {
	// Transport is the hub's first node, opened with the Factory's limits
	// and sink.
	Transport transport.Transport

	// Advance, when set, moves the clock of every node of the hub forward
	// by d: the ages of events (Limits.TTL) and of idempotency keys
	// (transport.IdempotencyTTL). When nil, the transport runs on real
	// time: the suite then tests ages with short real TTLs, waiting for
	// expiry up to a deadline, and leaves out what would take a day.
	Advance func(d time.Duration)

	// Housekeep, when set, does at once what the transport otherwise does
	// from time to time by itself (e.g. expiring events and forgetting
	// idle topics), and returns when it is done.
	Housekeep func()

	// Join, when set, opens another node of the same hub, with the hub's
	// limits and its own sink: a transport that shares the hub's sequence,
	// history and idempotency keys, as another Caddy instance would. It is
	// closed with t.Cleanup; it fails t when it cannot be opened. The
	// cross-node subtests run only when Join is set.
	Join func(t *testing.T, sink transport.Sink) transport.Transport
}

// Run checks every rule of the transport contract on hubs that f opens,
// each rule in a subtest of t named for the behaviour it checks.
func Run(t *testing.T, f Factory) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.run(t, f) })
	}
	t.Run("Patterns", func(t *testing.T) { runPatterns(t, f) }) // patterns.go
	t.Run("Nodes", func(t *testing.T) {
		if f(t, big, NewRecorder(t)).Join == nil {
			t.Skip("the factory's hubs offer no second node (Hub.Join)")
		}
		for _, c := range nodeCases {
			t.Run(c.name, func(t *testing.T) { c.run(t, f) })
		}
	})
}

type testCase struct {
	name string
	run  func(*testing.T, Factory)
}

// cases are the subtests of one node; nodeCases (nodes.go) those of a
// hub shared by several.
var cases = []testCase{
	// order.go
	{"IDsAreEpochAndSeqCountingFromOne", testIDs},
	{"EventsCarryTheirMessage", testEventContent},
	{"DeliversEachEventOnceInOrder", testDeliveryOrder},
	{"ConcurrentPublishersDeliverEachEventOnceInOrder", testConcurrentPublishers},
	{"BatchGetsConsecutiveSeqsInOrder", testBatch},
	{"ReceiptsCarryIDTopicsAndSubscribers", testReceipts},

	// replay.go
	{"ResumeFromCurrentIDReplaysNewerEventsOnce", testResumeCurrent},
	{"ResumeFromHeadReplaysNothing", testResumeFromHead},
	{"ResumeThatCannotBeServedResets", testResumeResets},
	{"ResetLatestCapsAReset", testResetLatest},
	{"LatestWithoutResume", testLatest},
	{"ReplayHeadIsTheNewestEvent", testReplayHead},
	{"ReplayAndLiveEventsMeetAtHead", testSeam},

	// pages.go
	{"ReplayPagesGiveTheWholeReplay", testReplayPages},
	{"ResetStartsWhereNoTopicLost", testResetStartsWhereNoTopicLost},
	{"EvictionsAreReportedToTheSink", testEvictionsReported},

	// history.go
	{"EvictsByCountPerTopic", testEvictByCount},
	{"EvictsOldestByHubBytesAcrossTopics", testEvictByBytes},
	{"SharedEventCountsOnceAndStaysWhileATopicHoldsIt", testSharedEvent},
	{"TopicNamesCountInBytes", testTopicNamesCount},
	{"EvictsByAge", testEvictByAge},
	{"HistoryZeroKeepsNoneButDelivers", testHistoryZero},
	{"EvictedTopicNeverLooksResumable", testIdleTopics},
	{"SetLimitsShrinkingTrimsAtOnce", testSetLimits},
	{"StatsReportTheHistory", testStats},

	// life.go
	{"WatchAndUnwatchAreCounted", testWatchCounting},
	{"SinkMayCallBackFromOtherGoroutines", testReentrantSink},
	{"CloseRefusesLaterCallsAndStopsTheSink", testClose},

	// disconnect.go
	{"DisconnectEndsThisNodesStreamsOnce", testDisconnect},

	// idempotency.go
	{"IdempotentRepeatPublishesNothing", testIdempotentRepeat},
	{"IdempotencyKeyWithAnotherFingerprintIsRefused", testKeyMismatch},
	{"IdempotentContinuationFromOffset", testContinuation},
	{"ConcurrentIdempotentRepeatsPublishOnce", testConcurrentRepeats},
	{"IdempotencyKeysArePerHub", testKeysPerHub},
	{"IdempotencyKeyExpires", testKeyExpiry},
	{"IdempotencyRecordStaysSmall", testIdempotencyRecordStaysSmall},
	{"IdempotencyBudgetForgetsOldestKeysFirst", testIdempotencyBudgetEvictsOldest},
	{"IdempotencySetLimitsShrinkingForgetsAtOnce", testIdempotencySetLimitsEvicts},
}
