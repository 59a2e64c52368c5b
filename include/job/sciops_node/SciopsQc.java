// The QC overlay of one unit, drawn in the JVM that ran the macro (driver.ijm's saveQc calls SciopsQc.draw).
//
// The same picture the driver's macro code draws (its fallback when this class is missing): the input's first
// plane, contrast-stretched (0.35 % saturated), scaled down by area averaging to a long side of at most 384 px,
// with the outlines of the ROI Manager's ROIs, or a circle at each Results X/Y, in pixel value 255, which the
// palette shows yellow (greys 0-254); saved as an 8-bit indexed PNG. Written in Java because the same steps as
// ImageJ commands (Enhance Contrast, Max, a mask, Draw, Scale twice, Convert to Mask, Image Calculator, a LUT)
// each build a dialog, an undo copy and an image window in batch mode: measured in one JVM on BBBC002 with 60
// ROIs on a loaded machine, the commands took 0.26-2.2 s an overlay, this (with ImageIO's PNG writer) 0.18-0.78 s,
// the first of a JVM the most; bench/bench_qc.py has the run-level figures (docs/benchmarks.md).
//
// Compiled beside the dialog agent (sciops_node.jvm.dialog_agent) with ImageJ's jar on the class path, into the
// agent's jar; without ImageJ's jar it is left out and the driver draws with commands.

import ij.IJ;
import ij.ImagePlus;
import ij.gui.Roi;
import ij.measure.Calibration;
import ij.measure.ResultsTable;
import ij.plugin.frame.RoiManager;
import ij.process.ByteProcessor;
import ij.process.FloatPolygon;
import ij.process.ImageProcessor;
import ij.process.ImageStatistics;
import java.awt.Polygon;
import java.io.BufferedOutputStream;
import java.io.ByteArrayOutputStream;
import java.io.DataOutputStream;
import java.io.File;
import java.io.FileOutputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.zip.CRC32;
import java.util.zip.Deflater;
import java.util.zip.DeflaterOutputStream;

public final class SciopsQc {
    /** The overlay's long side at most (px). */
    static final int LONG_SIDE = 384;
    /** Percent of pixels saturated by the stretch (half at each end), as Enhance Contrast's "saturated". */
    static final double SATURATED = 0.35;
    /** A circle's radius at a Results X/Y (px of the overlay). */
    static final int XY_RADIUS = 3;
    /** Scaled by less than this, the image is averaged as it shrinks (plain bilinear would alias its noise). */
    static final double AVERAGE_BELOW = 0.5;
    /** zlib's level for the PNG: 1 (fastest) was 48.7 KB a BBBC002 overlay against 41.2 KB at 6, in a third the time. */
    static final int DEFLATE_LEVEL = 1;

    private SciopsQc() {
    }

    /**
     * Draws the overlay of {@code source} into {@code out}: {@code what} is "rois" (the ROI Manager's), "xy" (the
     * Results table's X/Y) or "plain". Returns what was drawn ("rois n", "xy n", "plain"), "" when the image
     * could not be opened, or "error ..." (the driver then draws nothing).
     */
    public static String draw(String source, String out, String what) {
        try {
            ImagePlus imp = IJ.openImage(source);
            if (imp == null)
                return "";
            ImageProcessor ip = imp.getStack().getProcessor(1);
            if (ip.getNChannels() == 3)
                ip = ip.convertToByte(false);
            ByteProcessor bp = stretched(ip);
            double f = Math.min(1.0, LONG_SIDE / (double) Math.max(bp.getWidth(), bp.getHeight()));
            ImageProcessor small = bp;
            if (f < 1) {   // averaging (slow in ImageJ: 40-140 ms against 1-30) only where plain bilinear aliases
                bp.setInterpolationMethod(ImageProcessor.BILINEAR);
                small = bp.resize(Math.max(1, (int) Math.round(bp.getWidth() * f)),
                        Math.max(1, (int) Math.round(bp.getHeight() * f)), f < AVERAGE_BELOW);
            }
            byte[] px = (byte[]) small.getPixels();
            for (int i = 0; i < px.length; i++)
                if (px[i] == (byte) 255)
                    px[i] = (byte) 254;
            small.setValue(255);
            small.setLineWidth(1);
            String drawn = "plain";
            RoiManager rm = RoiManager.getInstance();
            ResultsTable rt = ResultsTable.getResultsTable();
            if ("rois".equals(what) && rm != null && rm.getCount() > 0) {
                Roi[] rois = rm.getRoisAsArray();
                for (Roi roi : rois) {
                    FloatPolygon p = roi.getFloatPolygon();
                    int[] xs = new int[p.npoints];
                    int[] ys = new int[p.npoints];
                    for (int i = 0; i < p.npoints; i++) {
                        xs[i] = (int) Math.round(p.xpoints[i] * f);
                        ys[i] = (int) Math.round(p.ypoints[i] * f);
                    }
                    small.drawPolygon(new Polygon(xs, ys, p.npoints));
                }
                drawn = "rois " + rois.length;
            } else if ("xy".equals(what) && rt != null && rt.size() > 0 && rt.columnExists("X") && rt.columnExists("Y")) {
                Calibration cal = imp.getCalibration();
                for (int i = 0; i < rt.size(); i++) {
                    int x = (int) Math.round(cal.getRawX(rt.getValue("X", i)) * f);
                    int y = (int) Math.round(cal.getRawY(rt.getValue("Y", i)) * f);
                    small.drawOval(x - XY_RADIUS, y - XY_RADIUS, 2 * XY_RADIUS, 2 * XY_RADIUS);
                }
                drawn = "xy " + rt.size();
            }
            byte[] r = new byte[256];
            byte[] g = new byte[256];
            byte[] b = new byte[256];
            for (int i = 0; i < 255; i++)
                r[i] = g[i] = b[i] = (byte) i;
            r[255] = (byte) 255;
            g[255] = (byte) 255;
            writePng((byte[]) small.getPixels(), small.getWidth(), small.getHeight(), r, g, b, out);
            return drawn;
        } catch (Throwable e) {
            return "error " + e;
        }
    }

    /**
     * An 8-bit palette PNG of {@code px}: rows filtered by "Sub" (each byte minus its left neighbour), deflated by
     * zlib (java.util.zip). Written by hand rather than with ImageIO's PNG writer, which tries five filters on
     * every row in Java and deflates at a high level: in one JVM over 10 BBBC002 overlays (384 x 384) on this
     * loaded 2-core machine, ImageIO took 140-490 ms a PNG (default settings) and 86-223 ms (compression quality
     * 0.5), this 8-110 ms (median ~35).
     */
    static void writePng(byte[] px, int w, int h, byte[] r, byte[] g, byte[] b, String out) throws IOException {
        byte[] raw = new byte[(w + 1) * h];
        for (int y = 0, o = 0; y < h; y++) {
            raw[o++] = 1;
            raw[o++] = px[y * w];
            for (int x = 1; x < w; x++)
                raw[o++] = (byte) (px[y * w + x] - px[y * w + x - 1]);
        }
        Deflater deflater = new Deflater(DEFLATE_LEVEL);
        ByteArrayOutputStream idat = new ByteArrayOutputStream(raw.length / 2);
        try (DeflaterOutputStream z = new DeflaterOutputStream(idat, deflater, 1 << 16)) {
            z.write(raw);
        } finally {
            deflater.end();
        }
        byte[] plte = new byte[3 * 256];
        for (int i = 0; i < 256; i++) {
            plte[3 * i] = r[i];
            plte[3 * i + 1] = g[i];
            plte[3 * i + 2] = b[i];
        }
        ByteBuffer ihdr = ByteBuffer.allocate(13).putInt(w).putInt(h).put(new byte[] {8, 3, 0, 0, 0});
        File tmp = new File(out + ".part");
        try (DataOutputStream o = new DataOutputStream(new BufferedOutputStream(new FileOutputStream(tmp)))) {
            o.write(new byte[] {(byte) 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'});
            chunk(o, "IHDR", ihdr.array());
            chunk(o, "PLTE", plte);
            chunk(o, "IDAT", idat.toByteArray());
            chunk(o, "IEND", new byte[0]);
        }
        if (!tmp.renameTo(new File(out)))
            throw new IOException("could not rename " + tmp + " to " + out);
    }

    static void chunk(DataOutputStream o, String type, byte[] data) throws IOException {
        byte[] t = type.getBytes(StandardCharsets.US_ASCII);
        CRC32 crc = new CRC32();
        crc.update(t);
        crc.update(data);
        o.writeInt(data.length);
        o.write(t);
        o.write(data);
        o.writeInt((int) crc.getValue());
    }

    /** {@code ip} as 8 bits, its darkest and brightest SATURATED/2 % clipped and the rest spread over 0-255. */
    static ByteProcessor stretched(ImageProcessor ip) {
        ip.resetMinAndMax();
        ImageStatistics st = ip.getStats();
        int[] h = st.histogram;
        long total = 0;
        for (int c : h)
            total += c;
        long cut = (long) (total * SATURATED / 200.0);
        int lo = 0;
        int hi = h.length - 1;
        long sum = h[lo];
        while (lo < hi && sum <= cut)
            sum += h[++lo];
        sum = h[hi];
        while (hi > lo && sum <= cut)
            sum += h[--hi];
        if (ip instanceof ByteProcessor) {
            int[] table = new int[256];
            for (int v = 0; v < 256; v++)
                table[v] = hi > lo ? Math.max(0, Math.min(255, (int) Math.round((v - lo) * 255.0 / (hi - lo)))) : v;
            ByteProcessor bp = (ByteProcessor) ip.duplicate();
            bp.applyTable(table);
            return bp;
        }
        if (hi > lo)
            ip.setMinAndMax(st.histMin + lo * st.binSize, st.histMin + (hi + 1) * st.binSize);
        return ip.convertToByteProcessor(true);
    }
}
