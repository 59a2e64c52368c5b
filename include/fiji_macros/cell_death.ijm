// @sciops outputs: results.csv summary.csv
// @sciops uses: percent_positive.ijm
// Cell death from a live/dead pair: every nucleus from a cell-permeant DNA stain (Hoechst, DAPI),
// dead ones marked by a cell-impermeant one (propidium iodide, SYTOX, DRAQ7). The counting is
// percent_positive's (run beside this macro, same arguments), with the marker read as "dead".
//
// Images it expects: as percent_positive, e.g. A01_Hoechst.tif + A01_PI.tif with
// nuclei_suffix=Hoechst marker_suffix=PI (file_pattern "*Hoechst.tif"), or one two-channel file.
//
// Arguments: those of percent_positive (nuclei_suffix, marker_suffix, nuclei_channel,
// marker_channel, threshold, min_size, sigma, watershed, marker_threshold).
//
// Writes, into output=:
//   results.csv  one row per nucleus: Area, Mean (the dead stain), X, Y, dead (1/0)
//   summary.csv  one row: nuclei, dead, live, dead_fraction, dead_threshold, dead_background, dead_file
function arg(key, dflt) {
    lines = split(getArgument(), "\n");
    for (i = 0; i < lines.length; i++) {
        if (startsWith(lines[i], key + "="))
            return substring(lines[i], lengthOf(key) + 1);
    }
    return dflt;
}

output = arg("output", "");
here = File.getParent(getInfo("macro.filepath"));
ret = runMacro(here + File.separator + "percent_positive.ijm", getArgument());
if (!File.exists(output + "/summary.csv"))
    exit;   // percent_positive printed why
// the same tables, in live/dead words
results = split(File.openAsString(output + "/results.csv"), "\n");
if (endsWith(results[0], ",positive")) {
    results[0] = substring(results[0], 0, lengthOf(results[0]) - lengthOf("positive")) + "dead";
    File.saveString(String.join(results, "\n") + "\n", output + "/results.csv");
}
rows = split(File.openAsString(output + "/summary.csv"), "\n");
v = split(rows[1], ",");
// nuclei, positive, fraction_positive, marker_threshold, marker_background, marker_file
live = parseInt(v[0]) - parseInt(v[1]);
f = File.open(output + "/summary.csv");
print(f, "nuclei,dead,live,dead_fraction,dead_threshold,dead_background,dead_file");
print(f, v[0] + "," + v[1] + "," + live + "," + v[2] + "," + v[3] + "," + v[4] + "," + v[5]);
File.close(f);
return "" + v[1] + "/" + v[0];
