/* ATA PIO disk guest: IDENTIFY, multi-sector READ/WRITE SECTORS (LBA28) with rep insw/outsw, polled, self-checked. */
#include "kernel.h"

/*
 * Drives the primary-channel master disk attached as `-drive file=IMG,format=raw,if=ide,index=0`,
 * where IMG is made by samples/disk.py (byte j of sector i = (i*131 + j*7 + (i >> 8)) & 0xff).
 * Interrupts stay off (IF=0 and nIEN set); every wait polls the status register with a bound.
 * Printed values are deterministic: the number of polls is never printed, only status values seen
 * at defined points (when data is ready, when a command has ended).
 */
#ifndef DISK_SECTORS            /* must equal disk_sectors in sample.toml */
#define DISK_SECTORS 256
#endif
_Static_assert(DISK_SECTORS >= 256 && DISK_SECTORS < (1 << 28), "the transfer plan needs 256..2^28-1 sectors");

#define ATA_DATA 0x1f0
#define ATA_ERROR 0x1f1
#define ATA_COUNT 0x1f2
#define ATA_LBA0 0x1f3
#define ATA_LBA1 0x1f4
#define ATA_LBA2 0x1f5
#define ATA_DEVICE 0x1f6
#define ATA_STATUS 0x1f7        /* read: status (acknowledges the interrupt); write: command */
#define ATA_COMMAND 0x1f7
#define ATA_CONTROL 0x3f6       /* write: device control; read: alternate status */

#define ST_BSY 0x80
#define ST_DRDY 0x40
#define ST_DF 0x20
#define ST_DRQ 0x08
#define ST_ERR 0x01

#define CTL_NIEN 0x02
#define CTL_SRST 0x04

#define CMD_READ_SECTORS 0x20
#define CMD_WRITE_SECTORS 0x30
#define CMD_FLUSH_CACHE 0xe7
#define CMD_IDENTIFY 0xec

#define POLL_LIMIT 20000000u    /* status reads before a wait gives up */
#define SECTOR 512

static u8 disk_buf[DISK_SECTORS * SECTOR];      /* whole-disk reads */
static u8 xfer_buf[256 * SECTOR];               /* one transfer's data */
static u8 written_gen[DISK_SECTORS];            /* 0: original contents, k: written by transfer k */
static const char *failure;

static u8 original_byte(u32 sector, u32 j) { return (u8)(sector * 131 + j * 7 + (sector >> 8)); }
static u8 written_byte(u32 sector, u32 j, u32 gen) { return (u8)((sector * 89) ^ (j * 13) ^ (gen * 0x35) ^ 0xc3); }

static u8 expected_byte(u32 sector, u32 j)
{
    u32 gen = written_gen[sector];
    return gen ? written_byte(sector, j, gen) : original_byte(sector, j);
}

static u32 fnv1a32(const u8 *p, u32 n)
{
    u32 h = 0x811c9dc5u;
    while (n--)
        h = (h ^ *p++) * 0x01000193u;
    return h;
}

static void ata_delay400(void)
{
    for (int i = 0; i < 4; i++)         /* four alternate-status reads: the ATA 400 ns settle time */
        (void)inb(ATA_CONTROL);
}

/* Polls until BSY clears; returns the status, or -1 (and sets failure) on timeout. */
static int ata_wait_not_busy(const char *what)
{
    for (u32 i = 0; i < POLL_LIMIT; i++) {
        u8 st = inb(ATA_STATUS);
        if (!(st & ST_BSY))
            return st;
    }
    failure = what;
    return -1;
}

static void rep_insw(u16 port, void *dst, uptr words)
{
    __asm__ volatile("rep insw" : "+D"(dst), "+c"(words) : "d"(port) : "memory");
}

static void rep_outsw(u16 port, const void *src, uptr words)
{
    __asm__ volatile("rep outsw" : "+S"(src), "+c"(words) : "d"(port) : "memory");
}

static int ata_reset(void)
{
    /* Select the master first: the firmware may have left the (absent) slave selected, and a software
     * reset does not change the selection in QEMU, so status reads would come from the slave (0). */
    outb(ATA_DEVICE, 0xa0);
    ata_delay400();
    if (inb(ATA_DEVICE) & 0x10) {
        failure = "could not select the master device";
        return -1;
    }
    if (ata_wait_not_busy("timeout waiting for the drive before reset") < 0)
        return -1;
    outb(ATA_CONTROL, CTL_SRST | CTL_NIEN);
    ata_delay400();
    outb(ATA_CONTROL, CTL_NIEN);
    ata_delay400();
    int st = ata_wait_not_busy("timeout waiting for reset");
    if (st < 0)
        return -1;
    printf("reset: status %02x error %02x signature %02x %02x %02x %02x\n", (u32)st, (u32)inb(ATA_ERROR),
           (u32)inb(ATA_COUNT), (u32)inb(ATA_LBA0), (u32)inb(ATA_LBA1), (u32)inb(ATA_LBA2));
    if ((st & (ST_DRDY | ST_DF | ST_DRQ | ST_ERR)) != ST_DRDY || inb(ATA_LBA1) != 0 || inb(ATA_LBA2) != 0) {
        failure = "no ready ATA device on the primary channel after reset";
        return -1;
    }
    return 0;
}

/* Selects the master in LBA mode and loads the LBA28 task file, then issues cmd. */
static int ata_command(u8 cmd, u32 lba, u32 count)
{
    outb(ATA_DEVICE, (u8)(0xe0 | ((lba >> 24) & 0x0f)));
    ata_delay400();
    int st = ata_wait_not_busy("timeout waiting for the drive before a command");
    if (st < 0)
        return -1;
    if (!(st & ST_DRDY) || (st & ST_DRQ)) {
        failure = "drive not ready for a command";
        return -1;
    }
    outb(ATA_COUNT, (u8)count);         /* 0 means 256 */
    outb(ATA_LBA0, (u8)lba);
    outb(ATA_LBA1, (u8)(lba >> 8));
    outb(ATA_LBA2, (u8)(lba >> 16));
    outb(ATA_COMMAND, cmd);
    ata_delay400();
    return 0;
}

/* Waits for DRQ before each sector's data; returns the status seen then (same for every sector) or -1. */
static int ata_wait_data(void)
{
    int st = ata_wait_not_busy("timeout waiting for DRQ");
    if (st < 0)
        return -1;
    if (st & (ST_ERR | ST_DF)) {
        failure = "drive reported an error during a transfer";
        return -1;
    }
    if (!(st & ST_DRQ)) {
        failure = "drive not ready to transfer data (DRQ clear)";
        return -1;
    }
    return st;
}

/* Waits for the end of a command; returns its final status (must be ready, no DRQ/ERR) or -1. */
static int ata_wait_end(void)
{
    int st = ata_wait_not_busy("timeout waiting for command completion");
    if (st < 0)
        return -1;
    if (st & (ST_ERR | ST_DF | ST_DRQ) || !(st & ST_DRDY)) {
        failure = "bad status at the end of a command";
        return -1;
    }
    return st;
}

/* Transfers count (1..256) sectors starting at lba; write=0 reads into buf, write=1 writes from it. */
static int ata_transfer(int write, u32 lba, u32 count, u8 *buf)
{
    if (ata_command(write ? CMD_WRITE_SECTORS : CMD_READ_SECTORS, lba, count & 0xff) < 0)
        return -1;
    int data_st = -1;
    for (u32 i = 0; i < count; i++) {
        int st = ata_wait_data();
        if (st < 0)
            return -1;
        if (data_st >= 0 && st != data_st) {
            failure = "data-ready status differs between sectors";
            return -1;
        }
        data_st = st;
        if (write)
            rep_outsw(ATA_DATA, buf + i * SECTOR, SECTOR / 2);
        else
            rep_insw(ATA_DATA, buf + i * SECTOR, SECTOR / 2);
    }
    int end_st = ata_wait_end();
    if (end_st < 0)
        return -1;
    printf("%s lba %u count %u: data-ready status %02x, end status %02x\n",
           write ? "write" : "read ", lba, count, (u32)data_st, (u32)end_st);
    return 0;
}

/* Compares sectors [lba, lba+count) in buf with the expected image; returns 0 if equal. */
static int check_sectors(const u8 *buf, u32 lba, u32 count, const char *what)
{
    for (u32 s = 0; s < count; s++)
        for (u32 j = 0; j < SECTOR; j++)
            if (buf[s * SECTOR + j] != expected_byte(lba + s, j)) {
                printf("mismatch at sector %u byte %u: read %02x expected %02x\n",
                       lba + s, j, (u32)buf[s * SECTOR + j], (u32)expected_byte(lba + s, j));
                failure = what;
                return -1;
            }
    return 0;
}

static int identify(void)
{
    static u16 id[256];
    if (ata_command(CMD_IDENTIFY, 0, 0) < 0)
        return -1;
    int data_st = ata_wait_data();
    if (data_st < 0)
        return -1;
    rep_insw(ATA_DATA, id, 256);
    int end_st = ata_wait_end();
    if (end_st < 0)
        return -1;
    u32 sectors = id[60] | ((u32)id[61] << 16);
    printf("identify: data-ready status %02x, end status %02x\n", (u32)data_st, (u32)end_st);
    printf("identify: word 0 bit 15 (ATAPI) %u, word 49 bit 9 (LBA) %u, words 60-61 (LBA28 sectors) %u\n",
           (u32)(id[0] >> 15), (u32)((id[49] >> 9) & 1), sectors);
    if (id[0] & 0x8000) {
        failure = "IDENTIFY says not an ATA device";
        return -1;
    }
    if (!(id[49] & (1 << 9))) {
        failure = "IDENTIFY says LBA is not supported";
        return -1;
    }
    if (sectors != DISK_SECTORS) {
        failure = "IDENTIFY sector count differs from the image size";
        return -1;
    }
    return 0;
}

/* Reads the whole disk in transfers of at most 256 sectors (a count of 256 is sent as 0). */
static int read_whole_disk(void)
{
    for (u32 lba = 0; lba < DISK_SECTORS; lba += 256) {
        u32 n = DISK_SECTORS - lba < 256 ? DISK_SECTORS - lba : 256;
        if (ata_transfer(0, lba, n, disk_buf + lba * SECTOR) < 0)
            return -1;
    }
    return 0;
}

static int run(void)
{
    if (ata_reset() < 0 || identify() < 0)
        return -1;

    /* 1. The fresh image, read in uneven chunks and then whole; both must match disk.py's pattern. */
    static const u32 chunks[] = { 1, 7, 64, 120, 64 };
    u32 lba = 0;
    for (u32 i = 0; i < sizeof(chunks) / sizeof(chunks[0]); i++) {
        if (ata_transfer(0, lba, chunks[i], xfer_buf) < 0 || check_sectors(xfer_buf, lba, chunks[i], "chunked read differs from the image") < 0)
            return -1;
        lba += chunks[i];
    }
    if (read_whole_disk() < 0 || check_sectors(disk_buf, 0, DISK_SECTORS, "whole-disk read differs from the image") < 0)
        return -1;
    printf("before writing: %u sectors match disk.py, fnv1a32 %08x\n", (u32)DISK_SECTORS,
           fnv1a32(disk_buf, DISK_SECTORS * SECTOR));

    /* 2. Multi-sector writes, each read back at once. */
    static const u32 writes[][2] = { { 1, 1 }, { 2, 3 }, { 16, 16 }, { 100, 100 }, { DISK_SECTORS - 1, 1 } };
    for (u32 k = 0; k < sizeof(writes) / sizeof(writes[0]); k++) {
        u32 wlba = writes[k][0], n = writes[k][1];
        for (u32 s = 0; s < n; s++) {
            written_gen[wlba + s] = (u8)(k + 1);
            for (u32 j = 0; j < SECTOR; j++)
                xfer_buf[s * SECTOR + j] = written_byte(wlba + s, j, k + 1);
        }
        if (ata_transfer(1, wlba, n, xfer_buf) < 0)
            return -1;
        memset(xfer_buf, 0, n * SECTOR);
        if (ata_transfer(0, wlba, n, xfer_buf) < 0 || check_sectors(xfer_buf, wlba, n, "read-back differs from the data written") < 0)
            return -1;
    }
    if (ata_command(CMD_FLUSH_CACHE, 0, 0) < 0)
        return -1;
    int st = ata_wait_end();
    if (st < 0)
        return -1;
    printf("flush cache: end status %02x\n", (u32)st);

    /* 3. A read past the last sector must fail with ERR (and no data phase), and the drive must recover. */
    if (ata_command(CMD_READ_SECTORS, DISK_SECTORS, 1) < 0)
        return -1;
    st = ata_wait_not_busy("timeout waiting for the out-of-range read");
    if (st < 0)
        return -1;
    u8 err = inb(ATA_ERROR);
    printf("read past the end (lba %u): ERR %u, DRQ %u, error register ABRT %u\n", (u32)DISK_SECTORS,
           (u32)(st & ST_ERR), (u32)((st >> 3) & 1), (u32)((err >> 2) & 1));
    if (!(st & ST_ERR) || (st & ST_DRQ)) {
        failure = "read past the end was not rejected";
        return -1;
    }

    /* 4. The whole disk again: written sectors changed, all others untouched. */
    memset(disk_buf, 0, sizeof(disk_buf));
    if (read_whole_disk() < 0 || check_sectors(disk_buf, 0, DISK_SECTORS, "disk contents after writing are wrong") < 0)
        return -1;
    u32 nwritten = 0;
    for (u32 i = 0; i < DISK_SECTORS; i++)
        nwritten += written_gen[i] != 0;
    printf("after writing: %u sectors rewritten, all %u as expected, fnv1a32 %08x\n", nwritten,
           (u32)DISK_SECTORS, fnv1a32(disk_buf, DISK_SECTORS * SECTOR));
    return 0;
}

int kmain(u32 boot_magic, uptr boot_info)
{
    serial_init();
    printf("io: ATA PIO on the primary channel, %u-bit guest, %u-sector disk\n", (u32)sizeof(void *) * 8,
           (u32)DISK_SECTORS);
    if (run() < 0) {
        printf("FAIL: %s\n", failure ? failure : "unknown");
        return EXIT_FAIL;
    }
    puts("PASS\n");
    return EXIT_PASS;
}
