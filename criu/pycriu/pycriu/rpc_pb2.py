"""The messages of criu's RPC protocol (rpc.proto), with the interface of the protobuf
module CRIU's pycriu uses (``rpc.criu_req()``, ``req.opts.pid = 1``, ``SerializeToString``,
``ParseFromString``, ``HasField``, ``MergeFrom``, ``rpc.DUMP``, ``rpc.criu_req_type.Name``),
in plain Python: a small proto2 codec driven by the field tables below, no protobuf package.
"""

# Field tables of the RPC messages (generated from criu/images/schema/criu.schema).
ENUMS = {
    'criu_cg_mode': {'IGNORE': 0, 'CG_NONE': 1, 'PROPS': 2, 'SOFT': 3, 'FULL': 4, 'STRICT': 5, 'DEFAULT': 6},
    'criu_network_lock_method': {'IPTABLES': 1, 'NFTABLES': 2, 'SKIP': 3},
    'criu_pre_dump_mode': {'SPLICE': 1, 'VM_READ': 2},
    'criu_req_type': {'EMPTY': 0, 'DUMP': 1, 'RESTORE': 2, 'CHECK': 3, 'PRE_DUMP': 4, 'PAGE_SERVER': 5, 'NOTIFY': 6, 'CPUINFO_DUMP': 7, 'CPUINFO_CHECK': 8, 'FEATURE_CHECK': 9, 'VERSION': 10, 'WAIT_PID': 11, 'PAGE_SERVER_CHLD': 12, 'SINGLE_PRE_DUMP': 13},
}
MESSAGES = {
    'criu_page_server_info': [
        (1, 'opt', 'str', 'address'),
        (2, 'opt', 'i32', 'port'),
        (3, 'opt', 'i32', 'pid'),
        (4, 'opt', 'i32', 'fd'),
    ],
    'criu_veth_pair': [
        (1, 'req', 'str', 'if_in'),
        (2, 'req', 'str', 'if_out'),
    ],
    'ext_mount_map': [
        (1, 'req', 'str', 'key'),
        (2, 'req', 'str', 'val'),
    ],
    'join_namespace': [
        (1, 'req', 'str', 'ns'),
        (2, 'req', 'str', 'ns_file'),
        (3, 'opt', 'str', 'extra_opt'),
    ],
    'inherit_fd': [
        (1, 'req', 'str', 'key'),
        (2, 'req', 'i32', 'fd'),
    ],
    'cgroup_root': [
        (1, 'opt', 'str', 'ctrl'),
        (2, 'req', 'str', 'path'),
    ],
    'unix_sk': [
        (1, 'req', 'u32', 'inode'),
    ],
    'criu_opts': [
        (1, 'req', 'i32', 'images_dir_fd'),
        (68, 'opt', 'str', 'images_dir'),
        (2, 'opt', 'i32', 'pid'),
        (3, 'opt', 'bool', 'leave_running'),
        (4, 'opt', 'bool', 'ext_unix_sk'),
        (5, 'opt', 'bool', 'tcp_established'),
        (6, 'opt', 'bool', 'evasive_devices'),
        (7, 'opt', 'bool', 'shell_job'),
        (8, 'opt', 'bool', 'file_locks'),
        (9, 'opt', 'i32', 'log_level'),
        (10, 'opt', 'str', 'log_file'),
        (11, 'opt', 'criu_page_server_info', 'ps'),
        (12, 'opt', 'bool', 'notify_scripts'),
        (13, 'opt', 'str', 'root'),
        (14, 'opt', 'str', 'parent_img'),
        (15, 'opt', 'bool', 'track_mem'),
        (16, 'opt', 'bool', 'auto_dedup'),
        (17, 'opt', 'i32', 'work_dir_fd'),
        (18, 'opt', 'bool', 'link_remap'),
        (19, 'rep', 'criu_veth_pair', 'veths'),
        (20, 'opt', 'u32', 'cpu_cap'),
        (21, 'opt', 'bool', 'force_irmap'),
        (22, 'rep', 'str', 'exec_cmd'),
        (23, 'rep', 'ext_mount_map', 'ext_mnt'),
        (24, 'opt', 'bool', 'manage_cgroups'),
        (25, 'rep', 'cgroup_root', 'cg_root'),
        (26, 'opt', 'bool', 'rst_sibling'),
        (27, 'rep', 'inherit_fd', 'inherit_fd'),
        (28, 'opt', 'bool', 'auto_ext_mnt'),
        (29, 'opt', 'bool', 'ext_sharing'),
        (30, 'opt', 'bool', 'ext_masters'),
        (31, 'rep', 'str', 'skip_mnt'),
        (32, 'rep', 'str', 'enable_fs'),
        (33, 'rep', 'unix_sk', 'unix_sk_ino'),
        (34, 'opt', 'criu_cg_mode', 'manage_cgroups_mode'),
        (35, 'opt', 'u32', 'ghost_limit'),
        (36, 'rep', 'str', 'irmap_scan_paths'),
        (37, 'rep', 'str', 'external'),
        (38, 'opt', 'u32', 'empty_ns'),
        (39, 'rep', 'join_namespace', 'join_ns'),
        (41, 'opt', 'str', 'cgroup_props'),
        (42, 'opt', 'str', 'cgroup_props_file'),
        (43, 'rep', 'str', 'cgroup_dump_controller'),
        (44, 'opt', 'str', 'freeze_cgroup'),
        (45, 'opt', 'u32', 'timeout'),
        (46, 'opt', 'bool', 'tcp_skip_in_flight'),
        (47, 'opt', 'bool', 'weak_sysctls'),
        (48, 'opt', 'bool', 'lazy_pages'),
        (49, 'opt', 'i32', 'status_fd'),
        (50, 'opt', 'bool', 'orphan_pts_master'),
        (51, 'opt', 'str', 'config_file'),
        (52, 'opt', 'bool', 'tcp_close'),
        (53, 'opt', 'str', 'lsm_profile'),
        (54, 'opt', 'str', 'tls_cacert'),
        (55, 'opt', 'str', 'tls_cacrl'),
        (56, 'opt', 'str', 'tls_cert'),
        (57, 'opt', 'str', 'tls_key'),
        (58, 'opt', 'bool', 'tls'),
        (59, 'opt', 'bool', 'tls_no_cn_verify'),
        (60, 'opt', 'str', 'cgroup_yard'),
        (61, 'opt', 'criu_pre_dump_mode', 'pre_dump_mode'),
        (62, 'opt', 'i32', 'pidfd_store_sk'),
        (63, 'opt', 'str', 'lsm_mount_context'),
        (64, 'opt', 'criu_network_lock_method', 'network_lock'),
        (65, 'opt', 'bool', 'mntns_compat_mode'),
        (66, 'opt', 'bool', 'skip_file_rwx_check'),
        (67, 'opt', 'bool', 'unprivileged'),
        (69, 'opt', 'bool', 'leave_stopped'),
        (70, 'opt', 'bool', 'display_stats'),
        (71, 'opt', 'bool', 'log_to_stderr'),
    ],
    'criu_dump_resp': [
        (1, 'opt', 'bool', 'restored'),
    ],
    'criu_restore_resp': [
        (1, 'req', 'i32', 'pid'),
    ],
    'criu_notify': [
        (1, 'opt', 'str', 'script'),
        (2, 'opt', 'i32', 'pid'),
    ],
    'criu_features': [
        (1, 'opt', 'bool', 'mem_track'),
        (2, 'opt', 'bool', 'lazy_pages'),
        (3, 'opt', 'bool', 'pidfd_store'),
    ],
    'criu_req': [
        (1, 'req', 'criu_req_type', 'type'),
        (2, 'opt', 'criu_opts', 'opts'),
        (3, 'opt', 'bool', 'notify_success'),
        (4, 'opt', 'bool', 'keep_open'),
        (5, 'opt', 'criu_features', 'features'),
        (6, 'opt', 'u32', 'pid'),
    ],
    'criu_resp': [
        (1, 'req', 'criu_req_type', 'type'),
        (2, 'req', 'bool', 'success'),
        (3, 'opt', 'criu_dump_resp', 'dump'),
        (4, 'opt', 'criu_restore_resp', 'restore'),
        (5, 'opt', 'criu_notify', 'notify'),
        (6, 'opt', 'criu_page_server_info', 'ps'),
        (7, 'opt', 'i32', 'cr_errno'),
        (8, 'opt', 'criu_features', 'features'),
        (9, 'opt', 'str', 'cr_errmsg'),
        (10, 'opt', 'criu_version', 'version'),
        (11, 'opt', 'i32', 'status'),
    ],
    'criu_version': [
        (1, 'req', 'i32', 'major_number'),
        (2, 'req', 'i32', 'minor_number'),
        (3, 'opt', 'str', 'gitid'),
        (4, 'opt', 'i32', 'sublevel'),
        (5, 'opt', 'i32', 'extra'),
        (6, 'opt', 'str', 'name'),
    ],
}

# Defaults rpc.proto gives (the rest default to zero, false, empty).
DEFAULTS = {
    ('criu_opts', 'images_dir_fd'): -1,
    ('criu_opts', 'log_level'): 2,
    ('criu_opts', 'cpu_cap'): 0xffffffff,
    ('criu_opts', 'ghost_limit'): 0x100000,
    ('criu_opts', 'pre_dump_mode'): 1,
    ('criu_opts', 'network_lock'): 1,
}

_VARINT, _LEN = 0, 2
_SCALARS = {'i32', 'u32', 'i64', 'u64', 'bool'}


class DecodeError(Exception):
    """Bytes that are not the message they should be."""


def _put_varint(out, v):
    v &= (1 << 64) - 1
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return


def _get_varint(buf, i):
    shift = v = 0
    while True:
        if i >= len(buf):
            raise DecodeError('truncated varint')
        b = buf[i]
        i += 1
        v |= (b & 0x7F) << shift
        if not b & 0x80:
            return v, i
        shift += 7
        if shift >= 64:
            raise DecodeError('varint too long')


def _signed(v, bits):
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


class _Enum:
    def __init__(self, name, values):
        self._name = name
        self._values = values
        self._names = {v: k for k, v in values.items()}

    def Name(self, number):
        return self._names[number]

    def Value(self, name):
        return self._values[name]

    def keys(self):
        return list(self._values)

    def values(self):
        return list(self._values.values())


class _Repeated(list):
    def __init__(self, make=None):
        super().__init__()
        self._make = make

    def add(self, **kw):
        m = self._make(**kw)
        self.append(m)
        return m


class Message:
    """A proto2 message: fields as attributes, presence tracked."""

    _name = None
    _fields = {}  # name -> (number, label, type)

    def __init__(self, **kw):
        object.__setattr__(self, '_values', {})
        for k, v in kw.items():
            setattr(self, k, v)

    def _make_sub(self, ty):
        return _CLASSES[ty]()

    def __getattr__(self, name):
        if name.startswith('_'):
            raise AttributeError(name)
        try:
            num, label, ty = self._fields[name]
        except KeyError:
            raise AttributeError('%s has no field %s' % (self._name, name))
        vals = self._values
        if name in vals:
            return vals[name]
        if label == 'rep':
            r = _Repeated(_CLASSES.get(ty))
            vals[name] = r
            return r
        if ty in _CLASSES:
            # Reading a sub-message makes it, as protobuf does for writing into it.
            m = self._make_sub(ty)
            vals[name] = m
            return m
        return DEFAULTS.get((self._name, name), '' if ty == 'str' else
                            b'' if ty == 'bytes' else False if ty == 'bool' else 0)

    def __setattr__(self, name, value):
        if name not in self._fields:
            raise AttributeError('%s has no field %s' % (self._name, name))
        num, label, ty = self._fields[name]
        if label == 'rep':
            r = _Repeated(_CLASSES.get(ty))
            r.extend(value)
            value = r
        self._values[name] = value

    def HasField(self, name):
        if name not in self._fields:
            raise ValueError('%s has no field %s' % (self._name, name))
        return name in self._values

    def ClearField(self, name):
        self._values.pop(name, None)

    def MergeFrom(self, other):
        for name, v in other._values.items():
            num, label, ty = self._fields[name]
            if label == 'rep':
                getattr(self, name).extend(v)
            elif ty in _CLASSES:
                getattr(self, name).MergeFrom(v)
            else:
                self._values[name] = v

    def CopyFrom(self, other):
        self._values.clear()
        self.MergeFrom(other)

    def SerializeToString(self):
        out = bytearray()
        for name, (num, label, ty) in sorted(self._fields.items(), key=lambda x: x[1][0]):
            present = name in self._values
            if not present and label == 'req':
                value = getattr(self, name)
            elif not present:
                continue
            else:
                value = self._values[name]
            for v in (value if label == 'rep' else [value]):
                if ty in _CLASSES:
                    body = v.SerializeToString()
                    _put_varint(out, num << 3 | _LEN)
                    _put_varint(out, len(body))
                    out += body
                elif ty in ('str', 'bytes'):
                    body = v.encode() if isinstance(v, str) else bytes(v)
                    _put_varint(out, num << 3 | _LEN)
                    _put_varint(out, len(body))
                    out += body
                else:
                    _put_varint(out, num << 3 | _VARINT)
                    _put_varint(out, int(v))
        return bytes(out)

    def ParseFromString(self, buf):
        self._values.clear()
        self.MergeFromString(buf)
        return len(buf)

    def MergeFromString(self, buf):
        by_num = {f[0]: (n, f[1], f[2]) for n, f in self._fields.items()}
        i = 0
        buf = bytes(buf)
        while i < len(buf):
            key, i = _get_varint(buf, i)
            num, wt = key >> 3, key & 7
            if wt == _VARINT:
                v, i = _get_varint(buf, i)
                payload = None
            elif wt == _LEN:
                n, i = _get_varint(buf, i)
                if i + n > len(buf):
                    raise DecodeError('truncated field %d' % num)
                payload, i = buf[i:i + n], i + n
            elif wt == 1:
                i += 8
                continue
            elif wt == 5:
                i += 4
                continue
            else:
                raise DecodeError('wire type %d' % wt)
            if num not in by_num:
                continue
            name, label, ty = by_num[num]
            if ty in _CLASSES:
                if payload is None:
                    raise DecodeError('field %s is not a message' % name)
                m = _CLASSES[ty]()
                m.MergeFromString(payload)
                value = m
            elif ty == 'str':
                value = (payload or b'').decode()
            elif ty == 'bytes':
                value = payload or b''
            elif payload is not None:
                raise DecodeError('field %s is not a scalar' % name)
            elif ty == 'bool':
                value = bool(v)
            elif ty in ('i32',) or ty in ENUMS:
                value = _signed(v, 32)
            elif ty == 'i64':
                value = _signed(v, 64)
            elif ty == 'u32':
                value = v & 0xffffffff
            else:
                value = v
            if label == 'rep':
                getattr(self, name).append(value)
            else:
                self._values[name] = value

    def __eq__(self, other):
        return type(self) is type(other) and self.SerializeToString() == other.SerializeToString()

    def __repr__(self):
        return '%s(%s)' % (self._name, ', '.join('%s=%r' % kv for kv in self._values.items()))


_CLASSES = {}
for _name, _fields in MESSAGES.items():
    _CLASSES[_name] = type(_name, (Message,), {
        '_name': _name,
        '_fields': {f[3]: (f[0], f[1], f[2]) for f in _fields},
    })
    globals()[_name] = _CLASSES[_name]

for _name, _values in ENUMS.items():
    globals()[_name] = _Enum(_name, _values)
    for _k, _v in _values.items():
        globals()[_k] = _v
