package spotd.flink;

import java.io.File;
import java.io.FileOutputStream;
import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.lang.reflect.Method;
import java.nio.charset.StandardCharsets;

import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.functions.RuntimeContext;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.connector.datagen.source.DataGeneratorSource;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.KeyedProcessFunction;
import org.apache.flink.util.Collector;

/**
 * A job that shows continuity through a reclaim, the same source on Flink 1.18
 * to 2.3 (only APIs present in all of them; what moved between 1.x and 2.x is
 * reached by reflection).
 *
 * <p>A deterministic source (DataGeneratorSource over a number sequence,
 * --rate records/s in total, each record due at a fixed time from the job's
 * submission on, so a replay runs as fast as it can until it has caught up,
 * as a Kafka source's would) emits sequence numbers; they are
 * keyed (seq % 64) into a process function with keyed state (a count per key)
 * which, as the job's sink, appends one line per record to a file of its own
 * under --out: "seq key count emit_ms subtask parallelism attempt". Lines are
 * written with one write(2) each, so a SIGKILLed TaskManager loses none that
 * it emitted. A record emitted twice is a replay (the sink is at-least-once
 * by design); a sequence number missing inside a split's run is a lost record.
 *
 * <p>The source runs at --source-parallelism (2): the number sequence is cut
 * into one endless split per source subtask at the first start, and a reader
 * given two of them after a downscale would read only the first, starving the
 * other; at 2 it keeps one split each on any cluster of 2 slots or more.
 *
 * <p>Arguments: --out DIR [--rate 2000] [--parallelism 6] [--source-parallelism 2] [--checkpoint-ms 60000] [--name continuity]
 */
public class ContinuityJob {
    public static void main(String[] args) throws Exception {
        String out = null, name = "continuity";
        long rate = 2000, checkpointMs = 60000;
        int parallelism = 6, sourceParallelism = 2;
        for (int i = 0; i + 1 < args.length; i += 2) {
            switch (args[i]) {
                case "--out": out = args[i + 1]; break;
                case "--rate": rate = Long.parseLong(args[i + 1]); break;
                case "--parallelism": parallelism = Integer.parseInt(args[i + 1]); break;
                case "--source-parallelism": sourceParallelism = Integer.parseInt(args[i + 1]); break;
                case "--checkpoint-ms": checkpointMs = Long.parseLong(args[i + 1]); break;
                case "--name": name = args[i + 1]; break;
                default: throw new IllegalArgumentException("unknown argument " + args[i]);
            }
        }
        if (out == null) throw new IllegalArgumentException("--out DIR is required");

        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment();
        env.setParallelism(parallelism);
        env.enableCheckpointing(checkpointMs);

        // Each record has a due time, as if a producer wrote it to a topic at
        // `rate` records/s from the job's submission on: the source never
        // emits a record before it is due, and emits as fast as it can when
        // behind (a replay after a restart catches up, as it would on Kafka).
        final long epochMs = System.currentTimeMillis();
        final double perSplitPerMs = rate / 1000.0 / sourceParallelism;
        final long splitSize = Long.MAX_VALUE / sourceParallelism;
        DataGeneratorSource<Long> source = new DataGeneratorSource<>(
                index -> {
                    long due = epochMs + (long) ((index % splitSize) / perSplitPerMs);
                    long wait = due - System.currentTimeMillis();
                    if (wait > 0) Thread.sleep(wait);
                    return index;
                }, Long.MAX_VALUE, Types.LONG);
        final String outDir = out;
        env.fromSource(source, WatermarkStrategy.noWatermarks(), "seq-source")
                .setParallelism(sourceParallelism)
                .keyBy(seq -> seq % 64)
                .process(new RecordingSink(outDir))
                .name("recording-sink")
                .filter(x -> false)
                .print();
        env.execute(name);
    }

    /** Keyed state plus a side-effect sink: one line per record, as emitted. */
    public static class RecordingSink extends KeyedProcessFunction<Long, Long, Long> {
        private static final long serialVersionUID = 1L;
        private final String outDir;
        private transient ValueState<Long> count;
        private transient FileOutputStream file;
        private transient String suffix;

        public RecordingSink(String outDir) {
            this.outDir = outDir;
        }

        @Override
        public void processElement(Long seq, Context ctx, Collector<Long> collector) throws Exception {
            if (file == null) init();
            Long c = count.value();
            c = c == null ? 1L : c + 1;
            count.update(c);
            String line = seq + " " + ctx.getCurrentKey() + " " + c + " " + System.currentTimeMillis() + suffix;
            file.write(line.getBytes(StandardCharsets.US_ASCII));
        }

        private void init() throws IOException {
            count = getRuntimeContext().getState(new ValueStateDescriptor<>("count", Types.LONG));
            int[] ti = taskInfo(getRuntimeContext());
            suffix = " " + ti[0] + " " + ti[1] + " " + ti[2] + "\n";
            String pid = ManagementFactory.getRuntimeMXBean().getName().split("@")[0];
            new File(outDir).mkdirs();
            file = new FileOutputStream(new File(outDir, "sink-" + ti[0] + "-" + ti[2] + "-" + pid + "-"
                    + System.nanoTime() + ".txt"), true);
        }

        @Override
        public void close() throws Exception {
            if (file != null) file.close();
            file = null;
            super.close();
        }
    }

    /** {subtask index, parallelism, attempt}: RuntimeContext.getTaskInfo() from
     *  1.19 (the only way on 2.x), the older getters on 1.18. */
    static int[] taskInfo(RuntimeContext rc) {
        try {
            Method m;
            Object o;
            try {
                m = RuntimeContext.class.getMethod("getTaskInfo");
                o = m.invoke(rc);
                Class<?> c = Class.forName("org.apache.flink.api.common.TaskInfo");
                return new int[] {
                    (Integer) c.getMethod("getIndexOfThisSubtask").invoke(o),
                    (Integer) c.getMethod("getNumberOfParallelSubtasks").invoke(o),
                    (Integer) c.getMethod("getAttemptNumber").invoke(o) };
            } catch (NoSuchMethodException e) {
                return new int[] {
                    (Integer) RuntimeContext.class.getMethod("getIndexOfThisSubtask").invoke(rc),
                    (Integer) RuntimeContext.class.getMethod("getNumberOfParallelSubtasks").invoke(rc),
                    (Integer) RuntimeContext.class.getMethod("getAttemptNumber").invoke(rc) };
            }
        } catch (ReflectiveOperationException e) {
            throw new RuntimeException(e);
        }
    }
}
