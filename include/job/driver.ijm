// SciOps driver macro: runs the user's macro once per image inside ONE JVM.
//
// Argument: the path of a job file written by sciops_task.py, read and deleted before any user macro runs:
//   line 1: secret=<this JVM's secret>   (see the bookkeeping lines below)
//   line 2: macro=<absolute path of the user's macro>
//   line 3: args=<key=value pairs separated by TAB>   (user macro arguments)
//   line 4+: <absolute input image path> TAB <absolute per-image output folder> TAB <argument> TAB <qc>
//            [TAB <series> TAB <channel> TAB <plain TIFF path>]
//   <qc>: 1 = save a QC overlay, a = only if the unit looks unusual, 0 = none (sciops_node/qc.py)
//
// A unit read through Bio-Formats (a series of a microscope file, with the three last fields) is
// opened here (that series; that channel, or all as a stack) and written as a plain TIFF, which the
// user's macro gets as input= (so a plain open(input) works on any format and series); the TIFF is
// deleted after the macro. With SciopsSeries on the class path the file stays open for its next
// series (its metadata from validate's memo); else the Bio-Formats Importer opens it: see openSeries.
//
// The user's macro receives <argument> through getArgument() (its line breaks written as
// the character 0x1f in the job file): newline-separated key=value lines (input=...,
// output=..., then the user's arguments), or the run's macro_argument template filled in.
//
// After the macro, what it left and did not save is kept: a Results table with rows as
// results.csv, a "Summary" table (Analyze Particles' summarize) as summary.csv. Then the QC overlay
// (qc.png: the input's first plane, contrast-stretched, long side <= 384 px, with the outlines of the
// ROI Manager's ROIs, else a circle at each Results X/Y), unless the macro wrote its own qc.png; drawn by
// SciopsQc.draw (sciops_node/SciopsQc.java) in one call when the dialog agent's jar has it, else by commands.
//
// Chaining (the local backend): when <job>.chain exists, after its own lines the driver runs the lines
// of <job>.more1, <job>.more2, ... (same format, written whole by the runner; each deleted once read) until
// <job>.end<N> appears.
//
// Bookkeeping lines on stdout (read by the task runner; tab-separated), each prefixed with the secret, which
// no user macro can know: a line a macro prints is never taken for one (sciops_node/protocol.py):
//   SCIOPS_<secret>_VERSION <ImageJ version>
//   SCIOPS_<secret>_BEGIN   <output folder>          (unique per unit: a file's series share its path)
//   SCIOPS_<secret>_END     <output folder> <milliseconds> <QC milliseconds> <QC drawn> <macro return value>
//                           (QC drawn: "rois <n>", "xy <n>", "plain", "own" or empty: see sciops_node/qc.py)
//   SCIOPS_<secret>_DONE
// The runner, not this macro, decides success: ImageJ 1 pops a modal dialog on a
// macro error (and hangs), so an image without an END line is a failure.
var userMacro = "";
var extra = "";
var tag = "";   // "SCIOPS_<secret>_"
var seen = newArray(0);   // log(1 + object count) of this JVM's units so far (the last 200): what "unusual" is
var seriesReader = false;   // SciopsSeries on the class path (see openSeries)
var seriesMemo = "";        // where its memo files go

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
    qc = "0";
    if (parts.length > 3)
        qc = parts[3];
    if (!File.isDirectory(output))   // the runner makes the folders while this JVM starts: this one first
        File.makeDirectory(output);
    print(tag + "BEGIN\t" + output);
    t0 = getTime();
    extracted = "";
    how = "";
    if (parts.length > 6) {
        extracted = parts[6];
        how = openSeries(input, parts[4], parts[5], extracted);
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
    t1 = getTime();
    drawn = "";
    if (qc != "0" && ret != "[aborted]")   // a macro that failed (ImageJ's error, out of memory) gets none
        drawn = saveQc(qc, input, extracted, output);
    qcTime = getTime() - t1;
    // Leave nothing behind for the next image: images, the Results table, ROIs (in batch mode the
    // ROI Manager is a hidden one that isOpen() does not see: reset it whenever it has any).
    run("Close All");
    run("Clear Results");
    if (roiManager("count") > 0)
        roiManager("reset");
    if (extracted != "" && File.exists(extracted))
        deleted = File.delete(extracted);
    print(tag + "END\t" + output + "\t" + elapsed + "\t" + qcTime + "\t" + drawn + "\t" + ret);
    // after END: the task's log only (a line during the unit would be the macro's, in its log.txt)
    if (how == "memo" || how == "parsed")
        print("[bio-formats] opened " + input + " once for its series in this JVM (metadata " + how + ")");
    else if (startsWith(how, "importer"))
        print("[bio-formats] " + input + " series " + parts[4] + " read by the Importer" + substring(how, 8));
}

// Whether a unit's object count n is unusual among this JVM's units so far (then recorded): none where
// the others had some, or log(1 + n) beyond 4 MADs of their median (sciops_node/qc.py: DRIVER_MADS; on a
// log scale, as counts vary by a factor, not a difference: BBBC002's 7-187 nuclei flag none of its 50).
function unusual(n) {
    k = seen.length;
    v = log(1 + n);
    odd = false;
    if (k >= 5) {
        s = Array.copy(seen);
        Array.sort(s);
        med = s[floor(k / 2)];
        for (i = 0; i < k; i++)
            s[i] = abs(seen[i] - med);
        Array.sort(s);
        mad = maxOf(0.05, s[floor(k / 2)]);
        odd = (n == 0 && med > 0) || abs(v - med) > 4 * 1.4826 * mad;
    }
    if (k >= 200)
        seen = Array.slice(seen, 1);
    seen = Array.concat(seen, v);
    return odd;
}

// The QC overlay of a unit (see the top); returns what it drew, "" when it drew nothing.
function saveQc(qc, input, extracted, output) {
    if (File.exists(output + "/qc.png"))
        return "own";
    rois = roiManager("count");
    xy = 0;
    if (rois == 0 && nResults > 0 && indexOf("\t" + Table.headings + "\t", "\tX\t") >= 0
        && indexOf("\t" + Table.headings + "\t", "\tY\t") >= 0)
        xy = nResults;
    if (!unusual(maxOf(rois, xy)) && qc == "a")
        return "";
    source = input;
    if (extracted != "")
        source = extracted;
    // only what ImageJ opens without a dialog (one in batch mode would hang this JVM)
    lower = toLowerCase(source);
    if (!(endsWith(lower, ".tif") || endsWith(lower, ".tiff") || endsWith(lower, ".png") || endsWith(lower, ".jpg")
          || endsWith(lower, ".jpeg") || endsWith(lower, ".gif") || endsWith(lower, ".bmp")) || !File.exists(source))
        return "";
    if (2 * File.length(source) > IJ.maxMemory() - IJ.currentMemory())   // opening it again could run out of memory
        return "";
    if (qcJava) {
        what = "plain";
        if (rois > 0)
            what = "rois";
        else if (xy > 0)
            what = "xy";
        drawn = call("SciopsQc.draw", source, output + "/qc.png", what);
        if (startsWith(drawn, "error")) {
            print("QC overlay of " + source + ": " + drawn);
            return "";
        }
        return drawn;
    }
    open(source);
    if (nSlices > 1)
        run("Duplicate...", "title=qc_plane");   // the plane shown (the first)
    if (bitDepth() == 24)
        run("8-bit");
    if (bitDepth() == 8) {   // the stretch into the pixels (the palette below replaces the display range)
        run("Enhance Contrast...", "saturated=0.35 normalize");
    } else {
        run("Enhance Contrast", "saturated=0.35");
        run("8-bit");   // through the stretched display range
    }
    // Without SciopsQc (no JDK on the node, or it did not compile), the same picture with commands: the
    // outlines drawn into the pixels as value 255, which the palette shows yellow (greys 0-254), an 8-bit
    // indexed PNG (no RGB copy, no Flatten: its anti-aliased drawing cost most in a JVM's first overlays).
    f = minOf(1, 384 / maxOf(getWidth(), getHeight()));
    run("Max...", "value=254");
    gray = getImageID();
    if (f < 1) {   // outlines 1/f wide on a mask of the full image, both scaled down, the mask's lines kept
        newImage("qc_mask", "8-bit black", getWidth(), getHeight(), 1);
        setLineWidth(-floor(-1 / f));
    }
    setColor(255);
    drawn = "plain";
    if (rois > 0) {
        if (f < 1)
            roiManager("Set Line Width", -floor(-1 / f));
        setForegroundColor(255, 255, 255);
        roiManager("Draw");
        roiManager("Show None");
        drawn = "rois " + rois;
    } else if (xy > 0) {
        for (i = 0; i < xy; i++) {
            x = getResult("X", i);
            y = getResult("Y", i);
            toUnscaled(x, y);
            drawOval(x - 3 / f, y - 3 / f, 6 / f, 6 / f);
        }
        drawn = "xy " + xy;
    }
    if (f < 1) {
        run("Scale...", "x=" + f + " y=" + f + " interpolation=Bilinear average create title=qc_mask_small");
        setThreshold(64, 255);
        run("Convert to Mask");
        selectImage(gray);
        run("Scale...", "x=" + f + " y=" + f + " interpolation=Bilinear average create title=qc_small");
        imageCalculator("Max", "qc_small", "qc_mask_small");
        selectImage("qc_small");
    }
    run("Select None");
    run("Remove Overlay");   // else the PNG writer would flatten it into RGB (the ROI Manager's, with numbers)
    reds = newArray(256);
    greens = newArray(256);
    blues = newArray(256);
    for (i = 0; i < 255; i++) {
        reds[i] = i;
        greens[i] = i;
        blues[i] = i;
    }
    reds[255] = 255;
    greens[255] = 255;
    blues[255] = 0;
    setLut(reds, greens, blues);
    saveAs("PNG", output + "/qc.png");
    return drawn;
}

// The series (0-based) and channel (1-based, or "all") of a file, saved as a plain TIFF at saveTo. Through
// SciopsSeries when the runner put it on the class path (-Dsciops.series=yes): the file's reader stays open
// for its next series, its metadata from the memo validate left; returns how the file was had: "open" (this
// JVM had it), "memo", "parsed". Else (Fiji; or SciopsSeries failed: then its words) the Bio-Formats
// Importer, which parses the whole file for each series: returns "importer...".
function openSeries(path, series, channel, saveTo) {
    said = "";
    if (seriesReader) {
        r = call("SciopsSeries.extract", path, series, channel, seriesMemo, saveTo);
        if (startsWith(r, "ok\t"))
            return substring(r, 3);
        said = " (the series reader said: " + substring(r, indexOf(r, "\t") + 1) + ")";
    }
    s = parseInt(series) + 1;
    options = "open=[" + path + "] color_mode=Default view=Hyperstack stack_order=XYCZT series_" + s;
    if (channel != "all")
        options = options + " specify_range c_begin_" + s + "=" + channel + " c_end_" + s + "=" + channel + " c_step_" + s + "=1";
    run("Bio-Formats Importer", options);
    saveAs("Tiff", saveTo);
    close("*");
    return "importer" + said;
}

// The ROI Manager a macro adds to must outlive it: in batch mode each macro (runMacro) gets a hidden one
// of its own, gone when it returns, unless a global one exists. The dialog agent (SciopsDialogs.java, when
// the node could build it: -Dsciops.agent=yes) makes one, hidden (a shown one's painting races its resets).
qcJava = false;   // the overlay drawn by SciopsQc (one call) rather than by ImageJ commands
if (call("java.lang.System.getProperty", "sciops.agent") == "yes") {
    shared = call("SciopsDialogs.shareRoiManager");   // "ok", or why not (then no ROI outlines)
    if (call("SciopsDialogs.qcDrawer") == "yes")
        qcJava = true;
}
if (call("java.lang.System.getProperty", "sciops.series") == "yes") {   // see openSeries
    seriesReader = true;
    seriesMemo = call("java.lang.System.getProperty", "sciops.bfmemo");
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
if (seriesReader)
    closed = call("SciopsSeries.close");
print(tag + "DONE");
