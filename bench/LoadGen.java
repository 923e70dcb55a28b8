// The latency benchmark's paced producer: the Apache Kafka Java client.
//
// bench_kafka.py's latency phases and trace feed a live worker at thousands of
// events/s. A Python producer (kafka-python) needed ~0.9 of a core at 3,500
// events/s on the two-core benchmark machine, and fell behind: its records
// queued in the client after their timestamps were taken, and that queue was
// measured as the worker's latency (it grew for the whole phase while the
// worker was 45 % busy). The Java client costs a few microseconds a record.
//
// Run on the Kafka jars that scripts/kafka-local fetches (bench_kafka.py
// compiles it once with javac; Java 17's source launcher runs it as is):
//
//   java -cp "$(scripts/kafka-local libs)/*" bench/LoadGen.java \
//        BOOTSTRAP TOPIC RECORDS_FILE RATE [LINGER_MS [SCHEDULE]]
//
// RECORDS_FILE holds the records in order: per record a big-endian int32 key
// length, the key bytes, an int32 value length and the value bytes. RATE is
// events/s (0: as fast as possible). Each record's timestamp is the producer's
// clock when send() is called (CreateTime), as kafka-python sets it. The
// pacing sleeps only when more than LINGER_MS (default 1) ahead of the
// schedule, so a record leaves at most that much early and waits at most that
// long in the client: both count as the worker's latency. Prints one
// JSON object: {"events": n, "achieved_eps": x, "send_s": s, "send_cpu_s": c}
// (c: the JVM's CPU seconds from the first send to the last acknowledgement).
//
// SCHEDULE (optional) splits the records into segments sent one after the
// other by the same producer: "COUNT:RATE:PAUSE_S,COUNT:RATE:PAUSE_S,..."
// (the counts add up to the file's records; after a segment, the producer
// flushes and idles PAUSE_S seconds). Each segment paces from its own start.
// One JVM for a warm-up and the measured phases: a fresh JVM's first second
// (class loading, the first compilations, new connections) ran beside the
// worker in every phase. The JSON object then also holds "segments": one
// object per segment with the same four fields, and a line
// {"segment_starts": i} comes out (flushed) as segment i starts.

import java.io.BufferedInputStream;
import java.io.DataInputStream;
import java.io.EOFException;
import java.io.FileInputStream;
import java.lang.management.ManagementFactory;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.atomic.AtomicReference;

import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class LoadGen {
    public static void main(String[] args) throws Exception {
        if (args.length < 4) {
            System.err.println("usage: LoadGen BOOTSTRAP TOPIC RECORDS_FILE RATE [LINGER_MS]");
            System.exit(2);
        }
        String bootstrap = args[0], topic = args[1], file = args[2];
        double rate = Double.parseDouble(args[3]);
        String linger = args.length > 4 ? args[4] : "1";
        // Records due within one linger are sent at once: one wake-up per linger.
        long tickNs = Math.max(1, Long.parseLong(linger)) * 1_000_000L;
        String schedule = args.length > 5 ? args[5] : "";

        List<byte[][]> records = new ArrayList<>();
        try (DataInputStream in = new DataInputStream(
                new BufferedInputStream(new FileInputStream(file), 1 << 20))) {
            while (true) {
                int kl;
                try {
                    kl = in.readInt();
                } catch (EOFException end) {
                    break;
                }
                byte[] k = new byte[kl];
                in.readFully(k);
                byte[] v = new byte[in.readInt()];
                in.readFully(v);
                records.add(new byte[][] {k, v});
            }
        }

        List<double[]> segments = new ArrayList<>();  // {count, rate, pause_s}
        if (schedule.isEmpty()) {
            segments.add(new double[] {records.size(), rate, 0});
        } else {
            long total = 0;
            for (String part : schedule.split(",")) {
                String[] f = part.split(":");
                if (f.length != 3) {
                    System.err.println("LoadGen: a segment is COUNT:RATE:PAUSE_S, not " + part);
                    System.exit(2);
                }
                double[] seg = {Long.parseLong(f[0]), Double.parseDouble(f[1]),
                                Double.parseDouble(f[2])};
                total += (long) seg[0];
                segments.add(seg);
            }
            if (total != records.size()) {
                System.err.println("LoadGen: the schedule counts " + total + " records, the file "
                        + records.size());
                System.exit(2);
            }
        }
        boolean paced = segments.stream().anyMatch(seg -> seg[1] > 0);

        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        p.put(ProducerConfig.LINGER_MS_CONFIG, paced ? linger : "5");
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        AtomicReference<Exception> failed = new AtomicReference<>();
        com.sun.management.OperatingSystemMXBean os =
            (com.sun.management.OperatingSystemMXBean) ManagementFactory.getOperatingSystemMXBean();
        List<String> figures = new ArrayList<>();
        long cpuAll = 0;
        double sentAll = 0;
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(p)) {
            // The topic's metadata before the clock starts: otherwise the first
            // send waits for it and the records due meanwhile leave in a burst.
            producer.partitionsFor(topic);
            int next = 0;
            for (double[] seg : segments) {
                int count = (int) seg[0];
                double segRate = seg[1];
                if (!schedule.isEmpty()) {
                    // Lets the caller read the worker's counters as the segment starts.
                    System.out.println("{\"segment_starts\": " + figures.size() + "}");
                    System.out.flush();
                }
                long start = System.nanoTime();
                long cpu0 = os.getProcessCpuTime();
                for (int i = 0; i < count; i++) {
                    if (segRate > 0) {
                        long due = start + (long) (i * 1e9 / segRate);
                        long ahead = due - System.nanoTime();
                        if (ahead > tickNs) {
                            Thread.sleep(ahead / 1_000_000L, (int) (ahead % 1_000_000L));
                        }
                    }
                    byte[][] r = records.get(next++);
                    producer.send(new ProducerRecord<>(topic, r[0], r[1]), (meta, exc) -> {
                        if (exc != null) {
                            failed.compareAndSet(null, exc);
                        }
                    });
                }
                double sentS = (System.nanoTime() - start) / 1e9;
                producer.flush();
                // The JVM's CPU from the segment's first send to its last
                // acknowledgement (start-up and connection set-up left out).
                long cpu = os.getProcessCpuTime() - cpu0;
                cpuAll += cpu;
                sentAll += sentS;
                figures.add(String.format("{\"events\": %d, \"achieved_eps\": %.1f, "
                        + "\"send_s\": %.3f, \"send_cpu_s\": %.3f}",
                        count, count / Math.max(sentS, 1e-9), sentS, cpu / 1e9));
                if (seg[2] > 0) {
                    Thread.sleep((long) (seg[2] * 1000));
                }
            }
        }
        if (failed.get() != null) {
            System.err.println("LoadGen: a send failed: " + failed.get());
            System.exit(1);
        }
        // With one segment, its figures; with a schedule, the sums and each segment's.
        System.out.printf("{\"events\": %d, \"achieved_eps\": %.1f, \"send_s\": %.3f, "
                + "\"send_cpu_s\": %.3f%s}%n",
                records.size(), records.size() / Math.max(sentAll, 1e-9), sentAll, cpuAll / 1e9,
                schedule.isEmpty() ? "" : ", \"segments\": [" + String.join(", ", figures) + "]");
    }
}
