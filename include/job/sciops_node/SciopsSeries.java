// SciopsSeries: microscope files read through Bio-Formats with their metadata parsed once per file.
//
// The Bio-Formats Importer parses a file's whole metadata (every series' IFDs and OME-XML) each time it
// opens one series: a task over n series of one file paid n full parses, O(n) each (0.23 s a series at 200
// series, issue 38). This class keeps one reader open in the JVM and walks the series of its file, and
// wraps that reader in Bio-Formats' Memoizer, so a JVM that opens the file again (another task, the
// probe's next run) deserializes what was parsed (a .bfmemo file) instead of parsing it.
//
// Memo files live under the folder the runner names (-Dsciops.bfmemo: the run's work/bfmemo; the probe gets
// the same folder), in a subfolder per user and file state, "<user>/<size>-<mtime ms>", and there as
// Memoizer writes them: the file's absolute path, its name as ".<name>.bfmemo". A memo is used only for a
// file of that path, size and mtime, written after the file was (Memoizer's own check) by the same memo
// format (Memoizer.VERSION); any other is ignored and a fresh one written.
//
// Called from macros through call() (probe.ijm, driver.ijm), with strings, returning a string; no call throws
// (ImageJ would show a dialog): an error comes back as "error<TAB>why". Compiled on the node against the
// launcher's ij.jar and Bio-Formats jar (sciops_node.jvm.series_reader) and put on the JVM's class path.
import ij.ImagePlus;
import ij.ImageStack;
import ij.io.FileSaver;
import ij.measure.Calibration;
import ij.process.ImageProcessor;
import java.io.File;
import java.io.FileOutputStream;
import java.io.OutputStreamWriter;
import java.io.Writer;
import java.nio.charset.StandardCharsets;
import loci.common.DebugTools;
import loci.formats.ChannelSeparator;
import loci.formats.FormatTools;
import loci.formats.ImageReader;
import loci.formats.Memoizer;
import loci.formats.MetadataTools;
import loci.formats.meta.IMetadata;
import loci.plugins.util.ImageProcessorReader;
import ome.units.UNITS;
import ome.units.quantity.Length;
import ome.units.quantity.Time;

public final class SciopsSeries {
    private static ImageProcessorReader reader;
    private static Memoizer memo;
    private static IMetadata meta;
    private static String openKey;   // path, size and mtime of the file the reader holds

    private SciopsSeries() {
    }

    /** Open {@code path} unless the reader holds it already: "open" (it did), "memo" or "parsed". */
    private static String use(String path, String memoRoot) throws Exception {
        File file = new File(path);
        String key = file.getAbsolutePath() + "\0" + file.length() + "\0" + file.lastModified();
        if (key.equals(openKey)) {
            return "open";
        }
        close();
        DebugTools.setRootLevel("ERROR");   // Bio-Formats' DEBUG lines would drown the task's log
        File dir = null;
        if (memoRoot != null && memoRoot.length() > 0) {
            // per user: Memoizer neither loads nor saves in a folder it cannot write (a cluster's job user
            // beside the Airflow worker's, which ran validate)
            File mine = new File(memoRoot, System.getProperty("user.name"));
            dir = new File(mine, file.length() + "-" + file.lastModified());
            dir.mkdirs();   // Memoizer skips a folder that does not exist
        }
        memo = new Memoizer(new ImageReader(), 0, dir);
        ImageProcessorReader r = new ImageProcessorReader(new ChannelSeparator(memo));
        IMetadata m = MetadataTools.createOMEXMLMetadata();
        r.setMetadataStore(m);
        r.setId(path);
        reader = r;
        meta = (IMetadata) r.getMetadataStore();
        openKey = key;
        return memo.isLoadedFromMemo() ? "memo" : "parsed";
    }

    /** Close the file the reader holds (the driver calls it when its units are done). */
    public static String close() {
        openKey = null;
        meta = null;
        if (reader != null) {
            try {
                reader.close();
            } catch (Exception e) {   // closing a file already gone: nothing left to release
            }
        }
        reader = null;
        memo = null;
        return "ok";
    }

    private static String why(Throwable e) {
        String text = e.getClass().getName() + ": " + e.getMessage();
        return text.replace('\t', ' ').replace('\n', ' ').replace('\r', ' ');
    }

    /**
     * The series of {@code path} from its metadata, one line each into {@code out}:
     * index, name, sizeX, sizeY, sizeC, sizeZ, sizeT, pixel type (tab-separated). {@code plane}: "last" also
     * reads the bottom-right corner of the last plane of the last series (the end of most files: one cut short
     * fails there), "none" reads no pixels. Returns "ok TAB how TAB series TAB planes read TAB ms".
     */
    public static String probe(String path, String memoRoot, String out, String plane) {
        long t0 = System.currentTimeMillis();
        try {
            String how = use(path, memoRoot);
            int n = reader.getSeriesCount();
            StringBuilder table = new StringBuilder();
            for (int s = 0; s < n; s++) {
                reader.setSeries(s);
                String name = meta.getImageCount() > s ? meta.getImageName(s) : null;
                name = name == null ? "" : name.replace('\t', ' ').replace('\n', ' ');
                table.append(s).append('\t').append(name).append('\t').append(reader.getSizeX()).append('\t')
                     .append(reader.getSizeY()).append('\t').append(reader.getSizeC()).append('\t')
                     .append(reader.getSizeZ()).append('\t').append(reader.getSizeT()).append('\t')
                     .append(FormatTools.getPixelTypeString(reader.getPixelType())).append('\n');
            }
            int planes = 0;
            if ("last".equals(plane) && n > 0) {
                reader.setSeries(n - 1);
                int w = Math.min(64, reader.getSizeX()), h = Math.min(64, reader.getSizeY());
                reader.openBytes(reader.getImageCount() - 1, reader.getSizeX() - w, reader.getSizeY() - h, w, h);
                planes = 1;
            }
            try (Writer fh = new OutputStreamWriter(new FileOutputStream(out), StandardCharsets.UTF_8)) {
                fh.write(table.toString());
            }
            return "ok\t" + how + "\t" + n + "\t" + planes + "\t" + (System.currentTimeMillis() - t0);
        } catch (Throwable e) {
            close();
            return "error\t" + why(e);
        }
    }

    /**
     * Series {@code series} (0-based) of {@code path}, channel {@code channel} (1-based, or "all": every
     * channel), as an ImageJ hyperstack (XYCZT, the physical sizes of its metadata) saved as a plain TIFF at
     * {@code saveTo}: what the Importer gives with color_mode=Default view=Hyperstack stack_order=XYCZT.
     * Returns "ok TAB how" (how: open, memo, parsed) or "error TAB why".
     */
    public static String extract(String path, String series, String channel, String memoRoot, String saveTo) {
        try {
            String how = use(path, memoRoot);
            int s = Integer.parseInt(series);
            reader.setSeries(s);
            int sizeC = reader.getSizeC(), sizeZ = reader.getSizeZ(), sizeT = reader.getSizeT();
            int c0 = 0, c1 = sizeC;
            if (!"all".equals(channel)) {
                c0 = Integer.parseInt(channel) - 1;
                c1 = c0 + 1;
                if (c0 < 0 || c1 > sizeC) {
                    return "error\tseries " + s + " has " + sizeC + " channel(s), not " + channel;
                }
            }
            ImageStack stack = new ImageStack(reader.getSizeX(), reader.getSizeY());
            for (int t = 0; t < sizeT; t++) {
                for (int z = 0; z < sizeZ; z++) {
                    for (int c = c0; c < c1; c++) {
                        ImageProcessor[] ips = reader.openProcessors(reader.getIndex(z, c, t));
                        stack.addSlice("c:" + (c + 1) + " z:" + (z + 1) + " t:" + (t + 1), ips[0]);
                    }
                }
            }
            String name = meta.getImageCount() > s ? meta.getImageName(s) : null;
            ImagePlus imp = new ImagePlus(name == null || name.length() == 0 ? "series " + s : name, stack);
            imp.setDimensions(c1 - c0, sizeZ, sizeT);
            if (imp.getNDimensions() > 3) {
                imp.setOpenAsHyperStack(true);
            }
            calibrate(imp, s);
            boolean saved = stack.getSize() > 1 ? new FileSaver(imp).saveAsTiffStack(saveTo)
                                                : new FileSaver(imp).saveAsTiff(saveTo);
            return saved ? "ok\t" + how : "error\tcould not write " + saveTo;
        } catch (Throwable e) {
            close();
            return "error\t" + why(e);
        }
    }

    private static void calibrate(ImagePlus imp, int s) {
        Calibration cal = imp.getCalibration();
        Length x = meta.getPixelsPhysicalSizeX(s), y = meta.getPixelsPhysicalSizeY(s);
        Length z = meta.getPixelsPhysicalSizeZ(s);
        boolean any = false;
        if (x != null && x.value(UNITS.MICROMETER) != null) {
            cal.pixelWidth = x.value(UNITS.MICROMETER).doubleValue();
            any = true;
        }
        if (y != null && y.value(UNITS.MICROMETER) != null) {
            cal.pixelHeight = y.value(UNITS.MICROMETER).doubleValue();
            any = true;
        }
        if (z != null && z.value(UNITS.MICROMETER) != null) {
            cal.pixelDepth = z.value(UNITS.MICROMETER).doubleValue();
        }
        Time dt = meta.getPixelsTimeIncrement(s);
        if (dt != null && dt.value(UNITS.SECOND) != null) {
            cal.frameInterval = dt.value(UNITS.SECOND).doubleValue();
            cal.setTimeUnit("sec");
        }
        if (any) {
            cal.setUnit("micron");
        }
    }
}
