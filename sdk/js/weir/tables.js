// The pipeline's tables, for the worlds that read them (`weir build` puts a stand-in here for a
// window plugin, whose world imports none).
export { get } from "weir:plugin/tables@0.2.0";
