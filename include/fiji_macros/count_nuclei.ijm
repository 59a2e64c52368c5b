// @sciops outputs: results.csv summary.csv
// Count nuclei in a fluorescence (DNA/DAPI) image.
//
// Threshold (auto method, dark background) -> fill holes -> watershed ->
// Analyze Particles. Writes, into the folder given as output=:
//   results.csv  one row per object: Area, Mean (intensity on the original image), X, Y
//   summary.csv  one row: count, mean_area, mean_intensity
//
// Arguments (key=value, one per line, given by the SciOps driver):
//   input=<image>  output=<folder>           (always)
//   threshold=Otsu        any ImageJ auto-threshold method
//   min_size=30           smallest object kept, in pixels
//   sigma=1               Gaussian blur before thresholding (0 = none)
//   background=0          rolling-ball background subtraction radius in pixels (0 = none);
//                         for uneven illumination, e.g. 50
//   watershed=true        split touching nuclei
function arg(key, dflt) {
    lines = split(getArgument(), "\n");
    for (i = 0; i < lines.length; i++) {
        if (startsWith(lines[i], key + "="))
            return substring(lines[i], lengthOf(key) + 1);
    }
    return dflt;
}
input = arg("input", "");
output = arg("output", "");
method = arg("threshold", "Otsu");
minSize = arg("min_size", "30");
sigma = parseFloat(arg("sigma", "1"));
background = parseFloat(arg("background", "0"));
watershed = arg("watershed", "true");

open(input);
// Work in pixels: many microscope TIFFs carry a calibration (even "inches").
run("Set Scale...", "distance=0 known=0 unit=pixel");
if (nSlices > 1)
    run("Duplicate...", "title=plane");   // first plane of a stack
if (bitDepth() == 24)
    run("8-bit");
if (is("Inverting LUT"))
    run("Invert LUT");
// a title with "]" or spaces would break the redirect=[...] option below: give it a plain one
rename("sciops_original");
orig = getTitle();
run("Duplicate...", "title=mask");
if (background > 0)
    run("Subtract Background...", "rolling=" + background);
if (sigma > 0)
    run("Gaussian Blur...", "sigma=" + sigma);
setAutoThreshold(method + " dark");
setOption("BlackBackground", true);
run("Convert to Mask");
run("Fill Holes");
if (watershed == "true")
    run("Watershed");
run("Set Measurements...", "area mean centroid redirect=[" + orig + "] decimal=3");
run("Analyze Particles...", "size=" + minSize + "-Infinity display clear");
n = nResults;
sumArea = 0;
sumMean = 0;
for (i = 0; i < n; i++) {
    sumArea += getResult("Area", i);
    sumMean += getResult("Mean", i);
}
meanArea = NaN;
meanInt = NaN;
if (n > 0) {
    meanArea = sumArea / n;
    meanInt = sumMean / n;
}
if (n > 0) {
    saveAs("Results", output + "/results.csv");
} else {
    // ImageJ writes no file for an empty table: write the header ourselves.
    f = File.open(output + "/results.csv");
    print(f, " ,Area,Mean,X,Y");
    File.close(f);
}
f = File.open(output + "/summary.csv");
print(f, "count,mean_area,mean_intensity");
print(f, n + "," + d2s(meanArea, 3) + "," + d2s(meanInt, 3));
File.close(f);
return "" + n;
