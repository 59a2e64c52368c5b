// @sciops outputs: results.csv summary.csv
// Percent positive: nuclei segmented on a nuclear stain (DNA/DAPI/Hoechst), each nucleus classified
// positive when the marker's mean intensity inside it (Ki67, pH3, EdU...) passes a threshold.
//
// Images it expects, either of:
//   * one file per channel, matched by name: the run's images are the nuclear channel (select them
//     with file_pattern, e.g. "*d0.tif"); the marker is the file of the same name with the last
//     nuclei_suffix replaced by marker_suffix, in the same folder:
//       A01_d0.tif -> A01_d1.tif         (nuclei_suffix=d0, marker_suffix=d1: CellProfiler's examples)
//       A01_DAPI.tif -> A01_Ki67.tif     (nuclei_suffix=DAPI, marker_suffix=Ki67)
//   * one multi-channel file (a 2+ channel hyperstack or stack): channels nuclei_channel and
//     marker_channel of it.
// 8- or 16-bit fluorescence, bright objects on a dark background.
//
// Arguments (key=value lines, given by the SciOps driver):
//   input=<image>  output=<folder>          (always)
//   nuclei_suffix=d0  marker_suffix=d1       channel files' names (see above)
//   nuclei_channel=1  marker_channel=2       channels of a multi-channel file
//   threshold=Otsu                           auto-threshold method for the nuclei
//   min_size=30                              smallest nucleus kept, in pixels
//   sigma=1                                  Gaussian blur of the nuclear stain before thresholding
//   watershed=true                           split touching nuclei
//   marker_threshold=auto                    a nucleus is positive when its mean marker intensity is
//                                            above this number. "auto": Otsu's split of the
//                                            per-nucleus means (on the log of their height above the
//                                            marker's background) into two classes, kept only when the
//                                            bright class stands (geometric mean) at least three times
//                                            as high above the background as the dim one; otherwise the
//                                            image holds one class and none is counted positive.
//                                            An image may hold only positive nuclei (a control
//                                            well)? Give a number, e.g. the threshold "auto" found
//                                            on a mixed image of the same stain.
//
// Writes, into output=:
//   results.csv  one row per nucleus: Area, Mean (marker), X, Y, positive (1/0)
//   summary.csv  one row: nuclei, positive, fraction_positive, marker_threshold (NaN: one class),
//                marker_background (median outside the nuclei), marker_file
function arg(key, dflt) {
    lines = split(getArgument(), "\n");
    for (i = 0; i < lines.length; i++) {
        if (startsWith(lines[i], key + "="))
            return substring(lines[i], lengthOf(key) + 1);
    }
    return dflt;
}

// One plane of the open image (channel c of a hyperstack, slice c of a plain stack) as its own image.
function plane(c, title) {
    getDimensions(w, h, channels, slices, frames);
    if (channels > 1)
        Stack.setChannel(c);
    else
        setSlice(c);
    run("Duplicate...", "title=" + title);
}

// Otsu's split of the per-nucleus values into a dim and a bright class, made on the logarithm of
// their height above the background (a marker is many times brighter in a positive nucleus, and on
// that scale one negative among twenty positives is still split off rather than the positives
// being cut in two), at the cut that maximises the between-class variance, halfway between the two
// values it falls between. NaN when they do not form two classes: the bright class's mean height
// is less than three times the dim class's.
function splitValues(values, background) {
    n = values.length;
    if (n < 2)
        return NaN;
    v = Array.copy(values);
    Array.sort(v);
    lv = newArray(n);
    total = 0;
    for (i = 0; i < n; i++) {
        lv[i] = log(maxOf(v[i] - background, 1));
        total += lv[i];
    }
    best = -1;
    at = -1;
    sumLow = 0;
    for (k = 1; k < n; k++) {       // dim class: v[0] .. v[k - 1]
        sumLow += lv[k - 1];
        if (lv[k] > lv[k - 1]) {
            m0 = sumLow / k;
            m1 = (total - sumLow) / (n - k);
            between = k * (n - k) * (m1 - m0) * (m1 - m0);
            if (between > best) {
                best = between;
                at = k;
                gap = m1 - m0;
            }
        }
    }
    if (at < 0 || gap < log(3))
        return NaN;
    return (v[at - 1] + v[at]) / 2;
}

input = arg("input", "");
output = arg("output", "");
nucSuffix = arg("nuclei_suffix", "d0");
markerSuffix = arg("marker_suffix", "d1");
nucChannel = parseInt(arg("nuclei_channel", "1"));
markerChannel = parseInt(arg("marker_channel", "2"));
method = arg("threshold", "Otsu");
minSize = arg("min_size", "30");
sigma = parseFloat(arg("sigma", "1"));
watershed = arg("watershed", "true");
markerThreshold = arg("marker_threshold", "auto");

open(input);
run("Set Scale...", "distance=0 known=0 unit=pixel");
source = getTitle();
markerFile = "";
if (nSlices > 1) {
    plane(nucChannel, "sciops_nuclei");
    selectWindow(source);
    plane(markerChannel, "sciops_marker");
    markerFile = File.getName(input) + " channel " + markerChannel;
} else {
    name = File.getName(input);
    at = lastIndexOf(name, nucSuffix);
    if (at < 0) {
        print("Error: " + name + " has no '" + nucSuffix + "' in its name and one channel only: set nuclei_suffix and marker_suffix to the channel files' naming, or select the nuclear channel's files with file_pattern");
        exit;
    }
    markerFile = substring(name, 0, at) + markerSuffix + substring(name, at + lengthOf(nucSuffix));
    markerPath = File.getParent(input) + File.separator + markerFile;
    if (!File.exists(markerPath)) {
        print("Error: File not found: the marker channel " + markerFile + " beside " + name);
        exit;
    }
    rename("sciops_nuclei");
    open(markerPath);
    run("Set Scale...", "distance=0 known=0 unit=pixel");
    rename("sciops_marker");
}
selectWindow("sciops_nuclei");
if (is("Inverting LUT")) {   // stored dark-on-light, shown light-on-dark: make the values what is shown
    run("Invert LUT");
    run("Invert");
}
run("Duplicate...", "title=sciops_mask");
if (sigma > 0)
    run("Gaussian Blur...", "sigma=" + sigma);
setAutoThreshold(method + " dark");
setOption("BlackBackground", true);
run("Convert to Mask");
run("Fill Holes");
if (watershed == "true")
    run("Watershed");
// the marker's background: its median outside the nuclei
selectWindow("sciops_mask");
run("Create Selection");
background = NaN;
if (selectionType() >= 0) {
    run("Make Inverse");
    selectWindow("sciops_marker");
    run("Restore Selection");
    background = getValue("Median");
    run("Select None");
}
selectWindow("sciops_mask");
run("Select None");
run("Set Measurements...", "area mean centroid redirect=sciops_marker decimal=3");
run("Analyze Particles...", "size=" + minSize + "-Infinity display clear add");   // add: the QC overlay's outlines
n = nResults;
means = newArray(n);
for (i = 0; i < n; i++)
    means[i] = getResult("Mean", i);
if (markerThreshold == "auto")
    cut = splitValues(means, background);
else
    cut = parseFloat(markerThreshold);
positive = 0;
for (i = 0; i < n; i++) {
    p = 0;
    if (!isNaN(cut) && means[i] > cut)
        p = 1;
    positive += p;
    setResult("positive", i, p);
}
updateResults();
if (n > 0) {
    saveAs("Results", output + "/results.csv");
} else {
    f = File.open(output + "/results.csv");
    print(f, " ,Area,Mean,X,Y,positive");
    File.close(f);
}
fraction = NaN;
if (n > 0)
    fraction = positive / n;
f = File.open(output + "/summary.csv");
print(f, "nuclei,positive,fraction_positive,marker_threshold,marker_background,marker_file");
print(f, n + "," + positive + "," + d2s(fraction, 4) + "," + d2s(cut, 3) + "," + d2s(background, 3) + ","
      + replace(markerFile, ",", ";"));
File.close(f);
return "" + positive + "/" + n;
