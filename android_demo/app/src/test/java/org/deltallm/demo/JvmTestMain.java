package org.deltallm.demo;

import org.junit.runner.JUnitCore;
import org.junit.runner.Result;
import org.junit.runner.notification.Failure;
import org.junit.runner.notification.RunListener;

/**
 * Runs the test classes named on the command line and fails when any test failed or was skipped
 * (an unmet assumption): the pytest driver runs every test, none may be left out.
 */
public final class JvmTestMain {
    private JvmTestMain() {}

    public static void main(String[] args) throws Exception {
        JUnitCore core = new JUnitCore();
        final int[] skipped = {0};
        core.addListener(new RunListener() {
            @Override
            public void testAssumptionFailure(Failure f) {
                skipped[0]++;
                System.out.println("SKIPPED " + f.getDescription() + ": " + f.getMessage());
            }

            @Override
            public void testFailure(Failure f) {
                System.out.println("FAILED " + f.getDescription() + ": " + f.getTrace());
            }
        });
        Class<?>[] classes = new Class<?>[args.length];
        for (int i = 0; i < args.length; i++) {
            classes[i] = Class.forName(args[i]);
        }
        Result r = core.run(classes);
        int passed = r.getRunCount() - r.getFailureCount() - skipped[0];
        System.out.println(passed + " passed, " + r.getFailureCount() + " failed, " + skipped[0] + " skipped");
        System.exit(r.wasSuccessful() && skipped[0] == 0 ? 0 : 1);
    }
}
