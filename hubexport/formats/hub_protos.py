"""The three protocol messages of the TF1 Hub format, defined without tensorflow_hub.

tensorflow-hub 0.16 no longer ships them, so they are declared here from
their ``.proto`` definitions in tensorflow_hub <= 0.15
(``tensorflow_hub/module_def.proto``, ``module_attachment.proto``,
``image_module_info.proto``), with the same package and field numbers, so
the bytes are what ``hub.Module`` parses:

* ``ModuleDef``: ``format`` = 1 (enum, ``FORMAT_V3`` = 3),
  ``required_features`` = 2 (repeated string). Stored in ``tfhub_module.pb``.
* ``ModuleAttachment``: ``key`` = 1 (string), ``value`` = 2 (bytes). Stored
  serialized in the meta graph collection ``hub_module_attachments``.
* ``ImageModuleInfo``: ``default_image_size`` = 1, an ``ImageSize`` with
  ``height`` = 1 and ``width`` = 2 (int32, pixels). Attached under the key
  ``image_module_info``; read by ``hub.get_expected_image_size``.
"""

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

FORMAT_V3 = 3
ATTACHMENT_COLLECTION = "hub_module_attachments"
IMAGE_MODULE_INFO_KEY = "image_module_info"

_F = descriptor_pb2.FieldDescriptorProto


def _file(name, messages, enums_for=None):
    proto = descriptor_pb2.FileDescriptorProto(
        name="hubexport/" + name, package="tensorflow_hub", syntax="proto3")
    for msg_name, fields in messages:
        msg = proto.message_type.add(name=msg_name)
        for field_name, number, ftype, label, type_name in fields:
            f = msg.field.add(name=field_name, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = type_name
        if enums_for and msg_name in enums_for:
            enum_name, values = enums_for[msg_name]
            enum = msg.enum_type.add(name=enum_name)
            for value_name, number in values:
                enum.value.add(name=value_name, number=number)
    return proto


_POOL = descriptor_pool.DescriptorPool()
_OPT, _REP = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
_POOL.Add(_file("module_def.proto", [
    ("ModuleDef", [("format", 1, _F.TYPE_ENUM, _OPT, ".tensorflow_hub.ModuleDef.Format"),
                   ("required_features", 2, _F.TYPE_STRING, _REP, None)]),
], enums_for={"ModuleDef": ("Format", [("FORMAT_UNSPECIFIED", 0), ("FORMAT_V3", 3)])}))
_POOL.Add(_file("module_attachment.proto", [
    ("ModuleAttachment", [("key", 1, _F.TYPE_STRING, _OPT, None),
                          ("value", 2, _F.TYPE_BYTES, _OPT, None)]),
]))
_image_file = _file("image_module_info.proto", [
    ("ImageModuleInfo", [("default_image_size", 1, _F.TYPE_MESSAGE, _OPT,
                          ".tensorflow_hub.ImageModuleInfo.ImageSize")]),
])
_size = _image_file.message_type[0].nested_type.add(name="ImageSize")
_size.field.add(name="height", number=1, type=_F.TYPE_INT32, label=_OPT)
_size.field.add(name="width", number=2, type=_F.TYPE_INT32, label=_OPT)
_POOL.Add(_image_file)


def _cls(full_name):
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(full_name))


ModuleDef = _cls("tensorflow_hub.ModuleDef")
ModuleAttachment = _cls("tensorflow_hub.ModuleAttachment")


ImageModuleInfo = _cls("tensorflow_hub.ImageModuleInfo")


def module_def_bytes():
    """Returns the serialized ``ModuleDef(format=FORMAT_V3)`` for ``tfhub_module.pb``."""
    return ModuleDef(format=FORMAT_V3).SerializeToString()


def image_module_info_attachment(height, width):
    """Returns a serialized ``ModuleAttachment`` holding ``ImageModuleInfo``.

    Args:
      height, width: the default image size in pixels (e.g. 224, 224).
    Returns:
      bytes: ``ModuleAttachment(key="image_module_info", value=ImageModuleInfo(...))``.
    """
    info = ImageModuleInfo()
    info.default_image_size.height = height
    info.default_image_size.width = width
    return ModuleAttachment(key=IMAGE_MODULE_INFO_KEY,
                            value=info.SerializeToString()).SerializeToString()


def parse_attachment(data):
    """Returns (key, value bytes) of a serialized ``ModuleAttachment``."""
    msg = ModuleAttachment.FromString(data)
    return msg.key, msg.value


def parse_image_module_info(data):
    """Returns [height, width] (pixels) from serialized ``ImageModuleInfo`` bytes.

    Raises:
      google.protobuf.message.DecodeError: the bytes do not parse.
    """
    info = ImageModuleInfo.FromString(data)
    return [info.default_image_size.height, info.default_image_size.width]
