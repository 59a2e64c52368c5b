// SciOps driver macro: runs the user's macro once per image inside ONE JVM.
//
// Argument: the path of a job file written by sciops_task.py, read and deleted before any user macro runs:
//   line 1: secret=<this JVM's secret>   (see the bookkeeping lines below)
//   line 2: macro=<absolute path of the user's macro>
//   line 3: args=<key=value pairs separated by TAB>   (user macro arguments)
//   line 4+: <absolute input image path> TAB <absolute per-image output folder> TAB <argument>
//            [TAB <series> TAB <channel> TAB <plain TIFF path>]
//
// A unit read through Bio-Formats (a series of a microscope file, with the three last fields) is
// opened here with the Bio-Formats Importer (that series; that channel, or all as a stack) and
// written as a plain TIFF, which the user's macro gets as input= (so a plain open(input) works
// on any format and series); the TIFF is deleted after the macro.
//
// The user's macro receives <argument> through getArgument() (its line breaks written as
// the character 0x1f in the job file): newline-separated key=value lines (input=...,
// output=..., then the user's arguments), or the run's macro_argument template filled in.
//
// After the macro, what it left and did not save is kept: a Results table with rows as
// results.csv, a "Summary" table (Analyze Particles' summarize) as summary.csv.
//
// Chaining (the local backend): when <job>.chain exists, after its own lines the driver runs the lines
// of <job>.more1, <job>.more2, ... (same format, written whole by the runner; each deleted once read) until
// <job>.end<N> appears.
//
// Bookkeeping lines on stdout (read by the task runner; tab-separated), each prefixed with the secret, which
// no user macro can know: a line a macro prints is never taken for one (sciops_node/protocol.py):
//   SCIOPS_<secret>_VERSION <ImageJ version>
//   SCIOPS_<secret>_BEGIN   <output folder>          (unique per unit: a file's series share its path)
//   SCIOPS_<secret>_END     <output folder> <milliseconds> <macro return value>
//   SCIOPS_<secret>_DONE
// The runner, not this macro, decides success: ImageJ 1 pops a modal dialog on a
// macro error (and hangs), so an image without an END line is a failure.
var userMacro = "";
var extra = "";
var tag = "";   // "SCIOPS_<secret>_"

// One unit of work: a job-file line (see the top).
function runUnit(line) {
    if (lengthOf(line) == 0)
        return;
    parts = split(line, "\t");
    input = parts[0];
    output = parts[1];
    argument = "input=" + input + "\noutput=" + output + "\n" + extra;
    if (parts.length > 2)
        argument = replace(parts[2], fromCharCode(31), "\n");
    if (!File.isDirectory(output))   // the runner makes the folders while this JVM starts: this one first
        File.makeDirectory(output);
    print(tag + "BEGIN\t" + output);
    t0 = getTime();
    extracted = "";
    if (parts.length > 5) {
        extracted = parts[5];
        openSeries(input, parts[3], parts[4], extracted);
    }
    ret = runMacro(userMacro, argument);
    elapsed = getTime() - t0;
    // the Summary table first: saveAs("Results") saves the front table, which it may be
    if (isOpen("Summary")) {
        if (!File.exists(output + "/summary.csv"))
            Table.save(output + "/summary.csv", "Summary");
        selectWindow("Summary");
        run("Close");
    }
    if (nResults > 0 && !File.exists(output + "/results.csv"))
        saveAs("Results", output + "/results.csv");
    // Leave nothing behind for the next image: images, the Results table, ROIs.
    run("Close All");
    run("Clear Results");
    if (isOpen("ROI Manager")) {
        roiManager("reset");
    }
    if (extracted != "" && File.exists(extracted))
        deleted = File.delete(extracted);
    print(tag + "END\t" + output + "\t" + elapsed + "\t" + ret);
}

// The series (0-based) and channel (1-based, or "all") of a file, through the Bio-Formats Importer,
// saved as a plain TIFF at saveTo.
function openSeries(path, series, channel, saveTo) {
    s = parseInt(series) + 1;
    options = "open=[" + path + "] color_mode=Default view=Hyperstack stack_order=XYCZT series_" + s;
    if (channel != "all")
        options = options + " specify_range c_begin_" + s + "=" + channel + " c_end_" + s + "=" + channel + " c_step_" + s + "=1";
    run("Bio-Formats Importer", options);
    saveAs("Tiff", saveTo);
    close("*");
}

setBatchMode(true);
job = getArgument();
text = File.openAsString(job);
deleted = File.delete(job);   // the secret with it, before any user macro runs
chain = File.exists(job + ".chain");
if (chain)
    deleted = File.delete(job + ".chain");
lines = split(text, "\n");
tag = "SCIOPS_" + substring(lines[0], lengthOf("secret=")) + "_";
userMacro = substring(lines[1], lengthOf("macro="));
extra = replace(substring(lines[2], lengthOf("args=")), "\t", "\n");
print(tag + "VERSION\t" + getVersion());
for (i = 3; i < lines.length; i++)
    runUnit(lines[i]);
// Chaining (local backend): the runner hands this JVM the images of the array's next chunk in
// <job>.more1, .more2, ..., or says there is none with <job>.end<N>.
if (chain) {
    k = 1;
    while (!File.exists(job + ".end" + k)) {
        more = job + ".more" + k;
        if (File.exists(more)) {
            moreLines = split(File.openAsString(more), "\n");
            deleted = File.delete(more);
            for (i = 0; i < moreLines.length; i++)
                runUnit(moreLines[i]);
            k++;
        } else {
            wait(5);
        }
    }
}
print(tag + "DONE");
