// The dialog watcher: a Java agent (-javaagent) in the JVM that runs ImageJ 1 under Xvfb.
//
// ImageJ 1.53t opens a modal dialog on a macro error (Interpreter.showError: "Macro Error", "No Image"),
// on run() of a command it does not know, and when a plugin asks for what its options did not say; the
// macro's thread then waits for a click that never comes, and the dialog's text is written nowhere
// (IJ.redirectErrorMessages() does not reach these: a macro's run() hands the error to the interpreter).
// This agent looks at the JVM's windows every WATCH_MS and prints each dialog shown, once, as one line:
//
//     SCIOPS_DIALOG <TAB> <title> <TAB> <its text, lines joined by " | ">
//
// The task runner (sciops_node.session) fails the image with that text at once and starts a new JVM on
// the images left. The agent closes nothing: the JVM is killed, so nothing of the interrupted macro
// (ImageJ turns batch mode off after a macro error) goes on to the next image.
//
// Compiled by the task runner with the node's own java into a jar of its temp folder, once per node and
// user (sciops_node.jvm.dialog_agent), as Java 8 class files and with nothing of ImageJ on the class path:
// ImageJ's MultiLineLabel (the message of its dialogs) is read by reflection.

import java.awt.Component;
import java.awt.Container;
import java.awt.Dialog;
import java.awt.Label;
import java.awt.TextComponent;
import java.awt.Window;
import java.lang.reflect.Field;
import java.util.Collections;
import java.util.Set;
import java.util.WeakHashMap;

public final class SciopsDialogs implements Runnable {
    /** How often the windows are looked at (ms). */
    static final long WATCH_MS = 200;
    /** A dialog's text is cut to this many characters. */
    static final int TEXT_MAX = 2000;

    public static void premain(String args, java.lang.instrument.Instrumentation inst) {
        premain(args);
    }

    public static void premain(String args) {
        Thread watcher = new Thread(new SciopsDialogs(), "sciops-dialogs");
        watcher.setDaemon(true);
        watcher.start();
    }

    /**
     * One hidden ROI Manager for the whole JVM (the driver calls this once, before any macro): ImageJ gives each
     * macro run in batch mode a hidden ROI Manager of its own, gone when the macro returns, unless a global one
     * exists; a shown one (a window) races its list's painting against the next reset. This one is hidden and
     * global, so the ROIs a lab macro adds are still there for the driver's QC overlay. Returns "ok" or why not.
     */
    /** "yes" when this jar holds the QC overlay drawer (SciopsQc, compiled against ImageJ's jar), else "no". */
    public static String qcDrawer() {
        try {
            Class.forName("SciopsQc", false, SciopsDialogs.class.getClassLoader());
            return "yes";
        } catch (Throwable e) {
            return "no";
        }
    }

    public static String shareRoiManager() {
        try {
            ClassLoader loader = Thread.currentThread().getContextClassLoader();
            Class<?> rm = Class.forName("ij.plugin.frame.RoiManager", true,
                    loader != null ? loader : SciopsDialogs.class.getClassLoader());
            Object hidden = rm.getConstructor(boolean.class).newInstance(Boolean.TRUE);
            Field instance = rm.getDeclaredField("instance");
            instance.setAccessible(true);
            instance.set(null, hidden);
            // Analyze Particles' "add" looks for a window titled "ROI Manager": this one, never shown
            Class.forName("ij.WindowManager", true, rm.getClassLoader())
                    .getMethod("addWindow", java.awt.Frame.class).invoke(null, hidden);
            return "ok";
        } catch (Throwable e) {
            return String.valueOf(e);
        }
    }

    public void run() {
        Set<Window> seen = Collections.newSetFromMap(new WeakHashMap<Window, Boolean>());
        while (true) {
            try {
                Thread.sleep(WATCH_MS);
            } catch (InterruptedException e) {
                return;
            }
            Window[] windows;
            try {
                windows = Window.getWindows();
            } catch (Throwable e) {   // no display: nothing can be shown
                continue;
            }
            for (Window w : windows) {
                if (w instanceof Dialog && w.isShowing() && seen.add(w)) {
                    StringBuilder text = new StringBuilder();
                    collect(w, text);
                    String line = "SCIOPS_DIALOG\t" + clean(((Dialog) w).getTitle()) + "\t" + clean(text.toString());
                    synchronized (System.out) {
                        System.out.println(line);
                        System.out.flush();
                    }
                }
            }
        }
    }

    /** The text of a dialog's labels and text fields, in order; ImageJ's MultiLineLabel line by line. */
    static void collect(Component c, StringBuilder out) {
        String text = null;
        if (c instanceof Label) {
            text = ((Label) c).getText();
        } else if (c instanceof TextComponent) {
            text = ((TextComponent) c).getText();
        } else if (c instanceof javax.swing.JLabel) {
            text = ((javax.swing.JLabel) c).getText();
        } else if (c instanceof javax.swing.text.JTextComponent) {   // IJ.showMessage's HTML dialog
            text = ((javax.swing.text.JTextComponent) c).getText().replaceAll("<[^>]*>", " ");
        } else if (c.getClass().getName().equals("ij.gui.MultiLineLabel")) {
            try {
                Field lines = c.getClass().getDeclaredField("lines");
                lines.setAccessible(true);
                StringBuilder joined = new StringBuilder();
                for (String line : (String[]) lines.get(c)) {
                    joined.append(line).append('\n');
                }
                text = joined.toString();
            } catch (ReflectiveOperationException | RuntimeException e) {
                text = "(" + e + ")";
            }
        }
        if (text != null && !text.trim().isEmpty()) {
            out.append(text).append('\n');
        }
        if (c instanceof Container) {
            for (Component child : ((Container) c).getComponents()) {
                collect(child, out);
            }
        }
    }

    /** One line: each run of blank lines, tabs and line breaks as " | ". */
    static String clean(String text) {
        if (text == null) {
            return "";
        }
        String s = text.replaceAll("[ \\u00a0]+", " ").trim();
        s = s.replaceAll("\\s*[\\t\\r\\n]+\\s*", " | ");
        return s.length() > TEXT_MAX ? s.substring(0, TEXT_MAX) + "..." : s;
    }
}
