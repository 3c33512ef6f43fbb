// Keyed state, for the worlds that have it (`weir build` puts a stand-in here for a window
// plugin, whose world imports none: weir keeps its accumulators).
export * from "weir:plugin/state@0.2.0";
