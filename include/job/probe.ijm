// SciOps probe: what Bio-Formats reads in one microscope file, from its metadata alone.
// Run by validate through the task runner (one JVM for many files; a file Bio-Formats cannot
// read fails on its own, with Bio-Formats' words, and the runner goes on with the next).
//
// Arguments (key=value lines): input=<file>  output=<folder>
// Writes <output>/series.tsv: one line per series:
//   index TAB name TAB sizeX TAB sizeY TAB sizeC TAB sizeZ TAB sizeT TAB pixel type
// (a pyramid's lower resolutions come as series of their own: sciops.imaging.bioformats tells them apart)
// and <output>/read.tsv: how it was read: from (parsed, memo), series, planes read, milliseconds.
//
// No pixels are read for a TIFF (validate has checked from its IFDs that every page's data lies within
// the file); for any other format, one corner of the last plane of the last series, where a file cut short
// ends. With the series reader on the class path (-Dsciops.series=yes: SciopsSeries.java) the metadata
// is parsed once and kept as a memo (-Dsciops.bfmemo) that the run's tasks open instead of parsing;
// else Bio-Formats' macro extensions read the same.
function arg(key) {
    lines = split(getArgument(), "\n");
    for (i = 0; i < lines.length; i++)
        if (startsWith(lines[i], key + "="))
            return substring(lines[i], lengthOf(key) + 1);
    return "";
}
input = arg("input");
output = arg("output");
lower = toLowerCase(input);
plane = "last";
if (endsWith(lower, ".tif") || endsWith(lower, ".tiff") || endsWith(lower, ".btf") || endsWith(lower, ".tf2")
    || endsWith(lower, ".tf8"))
    plane = "none";
if (call("java.lang.System.getProperty", "sciops.series") == "yes") {
    memo = call("java.lang.System.getProperty", "sciops.bfmemo");
    r = call("SciopsSeries.probe", input, memo, output + "/series.tsv", plane);
    closed = call("SciopsSeries.close");
    if (!startsWith(r, "ok\t")) {
        print(substring(r, 6));   // "<exception class>: <why>": an error line, the file's reason for the runner
        exit;
    }
    File.saveString(substring(r, 3) + "\n", output + "/read.tsv");
    exit;
}
t0 = getTime();
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
    name = replace(replace(name, "\t", " "), "\n", " ");
    table = table + s + "\t" + name + "\t" + x + "\t" + y + "\t" + c + "\t" + z + "\t" + t + "\t" + type + "\n";
}
planes = 0;
if (plane == "last" && n > 0) {
    Ext.setSeries(n - 1);
    Ext.getImageCount(count);
    Ext.openImage("sciops_probe_plane", count - 1);
    close("sciops_probe_plane");
    planes = 1;
}
Ext.close();
File.saveString(table, output + "/series.tsv");
File.saveString("parsed\t" + n + "\t" + planes + "\t" + (getTime() - t0) + "\n", output + "/read.tsv");
