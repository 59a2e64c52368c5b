// @sciops outputs: results.csv summary.csv
// Ki67 index of a brightfield DAB / haematoxylin image: colour deconvolution (Ruifrok & Johnston,
// Anal Quant Cytol Histol 23:291, 2001) done here in the macro (plain ImageJ 1 has no Colour
// Deconvolution plugin), nuclei segmented on the sum of the two stains, each nucleus positive when
// its mean DAB density passes dab_threshold.
//
// Images it expects: 8-bit RGB brightfield (TIFF, PNG, JPEG), light background, haematoxylin
// counterstain (blue) with DAB (brown) on the positive nuclei: a nuclear stain such as Ki67. A
// membrane or cytoplasm stain (HER2, FHL2) surrounds the nuclei with DAB and reads as positive.
//
// Arguments (key=value lines, given by the SciOps driver):
//   input=<image>  output=<folder>        (always)
//   hematoxylin=0.650,0.704,0.286          the stains' optical density vectors (R,G,B), as Fiji's
//   dab=0.268,0.570,0.776                  Colour Deconvolution has them for "H DAB"; measure your own
//                                          on pure-stain areas for better separation
//   background=255                         the light level of an empty field (0 = the image's own:
//                                          the 99th percentile of each channel)
//   threshold=Otsu                         auto-threshold method for the nuclei (on H + DAB density)
//   min_size=30  sigma=1  watershed=true   as in count_nuclei
//   dab_threshold=0.3                      mean DAB density (optical density along the DAB vector)
//                                          above which a nucleus is Ki67 positive
//
// Writes, into output=:
//   results.csv  one row per nucleus: Area, Mean (DAB density), X, Y, positive (1/0)
//   summary.csv  one row: nuclei, positive, ki67_index (positive / nuclei), dab_threshold
function arg(key, dflt) {
    lines = split(getArgument(), "\n");
    for (i = 0; i < lines.length; i++) {
        if (startsWith(lines[i], key + "="))
            return substring(lines[i], lengthOf(key) + 1);
    }
    return dflt;
}

function unit(v) {
    norm = sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
    return newArray(v[0] / norm, v[1] / norm, v[2] / norm);
}

// (one function: ImageJ 1.53 fails at run time on a function that returns another's array)
function vector(text) {
    parts = split(text, ",");
    x = parseFloat(parts[0]);
    y = parseFloat(parts[1]);
    z = parseFloat(parts[2]);
    norm = sqrt(x * x + y * y + z * z);
    return newArray(x / norm, y / norm, z / norm);
}

// one stain's density image: sum over channels of OD_c * w[c]
function density(title, w) {
    names = newArray("sciops_od_r", "sciops_od_g", "sciops_od_b");
    for (c = 0; c < 3; c++) {
        selectWindow(names[c]);
        run("Duplicate...", "title=sciops_term" + c);
        run("Multiply...", "value=" + d2s(w[c], 9));
    }
    imageCalculator("Add create 32-bit", "sciops_term0", "sciops_term1");
    rename("sciops_partial");
    imageCalculator("Add create 32-bit", "sciops_partial", "sciops_term2");
    rename(title);
    for (c = 0; c < 3; c++)
        close("sciops_term" + c);
    close("sciops_partial");
}

input = arg("input", "");
output = arg("output", "");
h = vector(arg("hematoxylin", "0.650,0.704,0.286"));
d = vector(arg("dab", "0.268,0.570,0.776"));
background = parseFloat(arg("background", "255"));
method = arg("threshold", "Otsu");
minSize = arg("min_size", "30");
sigma = parseFloat(arg("sigma", "1"));
watershed = arg("watershed", "true");
dabThreshold = parseFloat(arg("dab_threshold", "0.3"));

open(input);
run("Set Scale...", "distance=0 known=0 unit=pixel");
if (bitDepth() != 24) {
    print("Error: " + File.getName(input) + " is not an RGB brightfield image (bit depth " + bitDepth() + "): ki67_dab needs 8-bit RGB");
    exit;
}
rename("sciops_rgb");
// the third stain: what is left of unit length in each channel (as Fiji's plugin completes it)
r = newArray(3);
for (c = 0; c < 3; c++) {
    left = 1 - h[c] * h[c] - d[c] * d[c];
    r[c] = 0;
    if (left > 0)
        r[c] = sqrt(left);
}
r = unit(r);
// optical density per channel: OD = -ln((I + 1) / (I0 + 1))
run("RGB Stack");
names = newArray("sciops_od_r", "sciops_od_g", "sciops_od_b");
for (c = 0; c < 3; c++) {
    selectWindow("sciops_rgb");
    setSlice(c + 1);
    run("Duplicate...", "title=" + names[c]);
    level = background;
    if (level <= 0) {
        getHistogram(values, counts, 256);
        total = getWidth() * getHeight();
        seen = 0;
        level = 255;
        for (v = 0; v < 256 && seen < 0.99 * total; v++) {
            seen += counts[v];
            level = v;
        }
    }
    run("32-bit");
    run("Add...", "value=1");
    run("Divide...", "value=" + (level + 1));
    run("Log");
    run("Multiply...", "value=-1");
}
// stain densities = OD . inverse([h; d; r]) (rows: stains, columns: R, G, B)
m = newArray(h[0], h[1], h[2], d[0], d[1], d[2], r[0], r[1], r[2]);
det = m[0] * (m[4] * m[8] - m[5] * m[7]) - m[1] * (m[3] * m[8] - m[5] * m[6]) + m[2] * (m[3] * m[7] - m[4] * m[6]);
inv = newArray(
    (m[4] * m[8] - m[5] * m[7]) / det, (m[2] * m[7] - m[1] * m[8]) / det, (m[1] * m[5] - m[2] * m[4]) / det,
    (m[5] * m[6] - m[3] * m[8]) / det, (m[0] * m[8] - m[2] * m[6]) / det, (m[2] * m[3] - m[0] * m[5]) / det,
    (m[3] * m[7] - m[4] * m[6]) / det, (m[1] * m[6] - m[0] * m[7]) / det, (m[0] * m[4] - m[1] * m[3]) / det);
// density of stain s = sum_c OD_c * inv[c][s]
density("sciops_h", newArray(inv[0], inv[3], inv[6]));
density("sciops_dab", newArray(inv[1], inv[4], inv[7]));
imageCalculator("Add create 32-bit", "sciops_h", "sciops_dab");
rename("sciops_mask");
if (sigma > 0)
    run("Gaussian Blur...", "sigma=" + sigma);
setAutoThreshold(method + " dark");
setOption("BlackBackground", true);
run("Convert to Mask");
run("Fill Holes");
if (watershed == "true")
    run("Watershed");
run("Set Measurements...", "area mean centroid redirect=sciops_dab decimal=4");
run("Analyze Particles...", "size=" + minSize + "-Infinity display clear add");   // add: the QC overlay's outlines
n = nResults;
positive = 0;
for (i = 0; i < n; i++) {
    p = 0;
    if (getResult("Mean", i) > dabThreshold)
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
index = NaN;
if (n > 0)
    index = positive / n;
f = File.open(output + "/summary.csv");
print(f, "nuclei,positive,ki67_index,dab_threshold");
print(f, n + "," + positive + "," + d2s(index, 4) + "," + d2s(dabThreshold, 3));
File.close(f);
return "" + positive + "/" + n;
