package ssetest

import (
	"flag"
	"os"
	"strconv"
	"testing"
)

// MainParallel runs the tests of a package whose tests mostly wait (on
// servers, processes, timers) up to n parallel tests at once, rather than
// GOMAXPROCS: a package calls it from its TestMain.
func MainParallel(m *testing.M, n int) {
	DefaultParallel(n)
	os.Exit(m.Run())
}

// DefaultParallel sets -test.parallel to n unless the command line gives
// it. It parses the command line's flags.
func DefaultParallel(n int) {
	flag.Parse()
	given := false
	flag.Visit(func(f *flag.Flag) { given = given || f.Name == "test.parallel" })
	if !given {
		_ = flag.Set("test.parallel", strconv.Itoa(n))
	}
}
