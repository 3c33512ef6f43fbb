package weir

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
)

// The garbage collector runs only between calls, never on its own.
//
// The host writes a call's arguments into the plugin's memory through cabi_realloc, and a
// component may not call out of itself while it does. Go's collector, started by an allocation
// there, reads the clock (a WASI call) and the call traps ("cannot leave component instance"):
// with the default pacing, about one batch in a hundred. So automatic collection is off, and
// collect, at the end of each call, collects when the heap has grown by what was live after the
// last collection (GOGC=100's pacing), and by at least minGrowth.
func init() {
	debug.SetGCPercent(-1)
}

const minGrowth = 4 << 20

var (
	heap = []metrics.Sample{
		{Name: "/gc/heap/allocs:bytes"},
		{Name: "/gc/heap/live:bytes"},
	}
	allocatedAtLastGC uint64
)

func collect() {
	metrics.Read(heap)
	allocated, live := heap[0].Value.Uint64(), heap[1].Value.Uint64()
	if allocated-allocatedAtLastGC < max(live, minGrowth) {
		return
	}
	runtime.GC()
	allocatedAtLastGC = allocated
}
