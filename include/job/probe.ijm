// SciOps probe: what Bio-Formats reads in one microscope file, without reading its pixels
// (except the last plane of each series, so that a file cut short fails here, not in the run).
// Run by validate through the task runner (one JVM for many files; a file Bio-Formats cannot
// read fails on its own, with Bio-Formats' words, and the runner goes on with the next).
//
// Arguments (key=value lines): input=<file>  output=<folder>
// Writes <output>/series.tsv: one line per series:
//   index TAB name TAB sizeX TAB sizeY TAB sizeC TAB sizeZ TAB sizeT TAB pixel type
// (a pyramid's lower resolutions come as series of their own: sciops.bioformats tells them apart)
function arg(key) {
    lines = split(getArgument(), "\n");
    for (i = 0; i < lines.length; i++)
        if (startsWith(lines[i], key + "="))
            return substring(lines[i], lengthOf(key) + 1);
    return "";
}
input = arg("input");
output = arg("output");
call("loci.common.DebugTools.setRootLevel", "ERROR");   // Bio-Formats' DEBUG lines would drown the log
run("Bio-Formats Macro Extensions");
Ext.setId(input);
Ext.getSeriesCount(n);
table = "";
for (s = 0; s < n; s++) {
    Ext.setSeries(s);
    Ext.getSizeX(x);
    Ext.getSizeY(y);
    Ext.getSizeC(c);
    Ext.getSizeZ(z);
    Ext.getSizeT(t);
    Ext.getPixelType(type);
    Ext.getSeriesName(name);
    Ext.getImageCount(planes);
    Ext.openImage("sciops_probe_plane", planes - 1);
    close("sciops_probe_plane");
    name = replace(replace(name, "\t", " "), "\n", " ");
    table = table + s + "\t" + name + "\t" + x + "\t" + y + "\t" + c + "\t" + z + "\t" + t + "\t" + type + "\n";
}
Ext.close();
File.saveString(table, output + "/series.tsv");
